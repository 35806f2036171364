package main

import (
	"strings"
	"testing"
)

func TestExitCodes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"-h"}, 0, "usage: chatbench"},
		{[]string{"--scenario", "nope"}, 2, "unknown scenario"},
		{[]string{"--rate", "5000", "--senders", "10"}, 2, "WS_RATE"},
		{[]string{"--users", "-1"}, 2, "--users"},
		// Valid parameters against a stack that is not there: a run
		// failure, exit 1, said plainly.
		{[]string{"--users", "2", "--rooms", "1", "--room-size", "2", "--senders", "1", "--rate", "1", "--duration", "1s",
			"--api", "http://127.0.0.1:1", "--pg", "off", "--persister", "off"}, 1, "not reachable"},
	}
	for _, c := range cases {
		var out, errOut strings.Builder
		if got := run(c.args, &out, &errOut); got != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", c.args, got, c.code, errOut.String())
		}
		if !strings.Contains(errOut.String(), c.msg) {
			t.Errorf("%v: stderr %q does not say %q", c.args, errOut.String(), c.msg)
		}
	}
}
