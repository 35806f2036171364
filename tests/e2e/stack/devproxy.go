package stack

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// StartDevproxy builds tools/cmd/devproxy (the local single origin in front
// of the api and the gateways, sticky per client) and runs it on a free
// port with env added to its environment (API_UPSTREAM, GATEWAY_UPSTREAMS,
// WEB_DIR), stopped when t ends. It returns the base URL once /health
// answers.
func StartDevproxy(t testing.TB, env map[string]string) string {
	t.Helper()
	dir, err := CacheBinDir("relay-devproxy-bin")
	if err != nil {
		t.Fatal(err)
	}
	root, err := WorkspaceRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "devproxy")
	build := exec.Command("go", "build", "-o", bin, "relay/tools/cmd/devproxy")
	build.Dir = root
	var out bytes.Buffer
	build.Stdout, build.Stderr = &out, &out
	if err := build.Run(); err != nil {
		t.Fatalf("build devproxy: %v\n%s", err, out.String())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "DEVPROXY_ADDR="+addr)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	base := "http://" + addr
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		res, err := http.Get(base + "/health")
		if err == nil {
			_ = res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(end) {
			t.Fatalf("devproxy not up at %s: %v", base, err)
		}
	}
}
