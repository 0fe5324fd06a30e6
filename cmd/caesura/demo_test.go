package main

import (
	"strings"
	"testing"
)

// caesura demo with no flags runs on the memory backend and finishes with
// the OK verdict.
func TestDemoDefault(t *testing.T) {
	r := runCaesura(t, nil, "demo")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
	for _, want := range []string{"on mem:", "transfers/s", "lock wait p99", "out-of-order refusals", "deadlocks", "verdict", "OK: balance unchanged, no deadlock"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output has no %q:\n%s", want, r.stdout)
		}
	}
	// Not a terminal: plain progress lines, no carriage returns.
	if !strings.Contains(r.stdout, "progress: 20000/20000 transfers (100%)") || strings.Contains(r.stdout, "\r") {
		t.Errorf("want plain progress lines ending at 100%%:\n%q", r.stdout)
	}
}

func TestDemoFileBackend(t *testing.T) {
	r := runCaesura(t, nil, "demo", "--backend", fileBackend(t), "--workers", "8", "--accounts", "8", "--transfers", "500")
	if r.code != 0 || !strings.Contains(r.stdout, "OK: balance unchanged") {
		t.Fatalf("exit %d, want 0 and the OK verdict; stdout: %s; stderr: %s", r.code, r.stdout, r.stderr)
	}
}

func TestProgressBar(t *testing.T) {
	var b strings.Builder
	p := newProgress(&b, true)
	p.update(50, 100)
	p.update(100, 100)
	p.finish()
	out := b.String()
	if !strings.HasPrefix(out, "\r[") || !strings.Contains(out, "100/100 100%") || !strings.HasSuffix(out, "\n") {
		t.Errorf("got %q, want a bar redrawn with \\r, ending at 100%% and a newline", out)
	}
}
