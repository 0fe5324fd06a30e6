package main

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caesura-go/caesura/internal/testport"
	"go.etcd.io/etcd/server/v3/embed"
)

func init() { extraHelpers["etcd-server"] = etcdServerMain }

// etcdServerMain runs an embedded single-member etcd server until SIGTERM:
// args are the data directory, the client port and the peer port. It runs
// in a process of its own (the test binary as a helper), so that a test can
// kill it, and so that its goroutines are not the test process's.
func etcdServerMain(args []string) int {
	cfg := embed.NewConfig()
	cfg.Dir = args[0]
	cu, _ := url.Parse("http://127.0.0.1:" + args[1])
	pu, _ := url.Parse("http://127.0.0.1:" + args[2])
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd did not become ready")
		return 1
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, os.Interrupt)
	<-c
	e.Close()
	return 0
}

// startEtcd starts an etcd server in a helper process and returns its URL
// and a function that kills it (SIGKILL: no goodbye to the clients).
func startEtcd(t *testing.T) (backend string, kill func()) {
	t.Helper()
	ports, err := testport.Reserve(2)
	if err != nil {
		t.Fatal(err)
	}
	client, peer := fmt.Sprint(ports[0]), fmt.Sprint(ports[1])
	argv := helper("etcd-server", filepath.Join(t.TempDir(), "data"), client, peer)
	cmd := exec.Command(argv[0], argv[1:]...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(kill)
	addr := "127.0.0.1:" + client
	for range 3000 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "etcd://" + addr, kill
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("etcd on %s did not start: %s", addr, errb.String())
	return "", nil
}

func TestEtcdRunStatusDemo(t *testing.T) {
	t.Parallel()
	backend, _ := startEtcd(t)
	r := runCaesura(t, nil, append([]string{"run", "--backend", backend, "-k", "job", "--"}, helper("env")...)...)
	if r.code != 0 || parseEnv(r.stdout)["CAESURA_TOKEN_JOB"] == "" {
		t.Fatalf("run: exit %d, want 0 and a token; stdout: %s; stderr: %s", r.code, r.stdout, r.stderr)
	}
	release := hold(t, backend, "busy")
	if r := runCaesura(t, nil, "run", "--backend", backend, "--wait", "0", "-k", "busy", "--", "true"); r.code != 1 {
		t.Errorf("--wait 0 on a held key: exit %d, want 1; stderr: %s", r.code, r.stderr)
	}
	if r := runCaesura(t, nil, "status", "--backend", backend, "busy", "free"); r.code != 1 || !hasRow(r.stdout, `"busy"`, "held") || !hasRow(r.stdout, `"free"`, "free") {
		t.Errorf("status: exit %d, want 1, busy held, free free; stdout: %s; stderr: %s", r.code, r.stdout, r.stderr)
	}
	release()
	r = runCaesura(t, nil, "demo", "--backend", backend, "--workers", "4", "--accounts", "8", "--transfers", "200")
	if r.code != 0 || !strings.Contains(r.stdout, "OK: balance unchanged") {
		t.Errorf("demo: exit %d, want 0 and the OK verdict; stdout: %s; stderr: %s", r.code, r.stdout, r.stderr)
	}
}

// Killing the etcd server while the command runs: the session lease cannot
// be kept alive, the command gets SIGTERM, caesura exits with the lost-lock
// code.
func TestEtcdLockLost(t *testing.T) {
	t.Parallel()
	backend, kill := startEtcd(t)
	file := filepath.Join(t.TempDir(), "trap")
	cmd := caesuraCmd(nil, append([]string{"run", "--backend", backend, "--ttl", "2s", "-k", "lease", "--"}, helper("trap", file)...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, file, "ready")
	kill()
	r := finish(t, cmd, start, &out, &errb)
	if r.code != exitLostDefault {
		t.Errorf("exit %d, want %d; stderr: %s", r.code, exitLostDefault, r.stderr)
	}
	b, _ := os.ReadFile(file)
	if !strings.Contains(string(b), "got terminated") {
		t.Errorf("the command wrote %q, want it to have got SIGTERM", b)
	}
	t.Logf("lost after %v", r.elapsed)
}
