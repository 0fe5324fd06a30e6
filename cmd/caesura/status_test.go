package main

import (
	"regexp"
	"strings"
	"testing"
)

func TestStatus(t *testing.T) {
	backend := fileBackend(t)
	r := runCaesura(t, nil, "status", "--backend", backend, "a", "b")
	if r.code != 0 {
		t.Errorf("all free: exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, `"a"  free`) || !strings.Contains(r.stdout, `"b"  free`) {
		t.Errorf("all free: got\n%s", r.stdout)
	}

	release := hold(t, backend, "a")
	r = runCaesura(t, []string{"CAESURA_BACKEND=" + backend}, "status", "a", "b")
	if r.code != 1 {
		t.Errorf("a held: exit %d, want 1; stderr: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, `"a"  held`) || !strings.Contains(r.stdout, `"b"  free`) {
		t.Errorf("a held: got\n%s", r.stdout)
	}
	// The file backend is an Inspector: the held line has since, token and
	// holder (host and pid of the caesura process holding it).
	held := regexp.MustCompile(`"a"\s+held\s+\S+ \(\d+s ago\)\s+\d+\s+\S* ?pid \d+`)
	if !held.MatchString(r.stdout) {
		t.Errorf("a held: want since, token and holder pid; got\n%s", r.stdout)
	}
	release()

	r = runCaesura(t, nil, "status", "--backend", backend, "a")
	if r.code != 0 {
		t.Errorf("after release: exit %d, want 0; stdout: %s; stderr: %s", r.code, r.stdout, r.stderr)
	}
}
