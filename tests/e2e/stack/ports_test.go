package stack

import (
	"net"
	"testing"
)

// freePort never hands out a port twice in a process, even one the kernel
// offers again right after it was closed, and each is free when returned.
func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[string]bool{}
	for range 300 {
		addr, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
	}
	addr := freeAddr(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s not free: %v", addr, err)
	}
	_ = ln.Close()
}
