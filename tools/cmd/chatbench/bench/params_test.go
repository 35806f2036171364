package bench

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestScenarioDefaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name                              string
		users, conns, rooms, size, sender int
		rate                              float64
		gateways                          int
	}{
		{ScenarioChat, 1000, 1000, 100, 10, 1000, 1000, 2},
		{ScenarioFanout, 1000, 1000, 1, 1000, 50, 50, 2},
		{ScenarioIdle, 1000, 10000, 100, 10, 0, 0, 1},
		{ScenarioMax, 1000, 1000, 100, 10, 1000, 500, 2},
		{ScenarioArtillery, 500, 500, 10, 50, 0, 0, 2},
	}
	for _, c := range cases {
		p, err := ParseArgs([]string{"--scenario", c.name}, io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if p.Users != c.users || p.Conns != c.conns || p.Rooms != c.rooms || p.RoomSize.Min != c.size ||
			p.Senders != c.sender || p.Rate != c.rate || len(p.Gateways) != c.gateways || !p.GatewaysDefaulted {
			t.Errorf("%s: got %+v", c.name, p)
		}
		if _, err := NewPlan(p); err != nil {
			t.Errorf("%s: the default plan is refused: %v", c.name, err)
		}
	}
}

func TestFlagsOverrideScenario(t *testing.T) {
	t.Parallel()
	p, err := ParseArgs([]string{
		"--scenario", "fanout", "--users", "20", "--rooms", "2", "--room-size", "5-10", "--senders", "4",
		"--rate", "8", "--duration", "3s", "--size", "10", "--ramp", "50", "--gateways", "127.0.0.1:9000,ws://h:1/x",
		"--pg", "off", "--persister", "OFF", "--heartbeat", "0s", "--pids", "1,2", "--procs", "gateway,postgres",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Params{Users: 20, Conns: 20, Rooms: 2, RoomSize: SizeDist{5, 10}, Senders: 4, Rate: 8, Duration: 3 * time.Second, Size: 10, Ramp: 50}
	if p.Users != want.Users || p.Conns != want.Conns || p.Rooms != want.Rooms || p.RoomSize != want.RoomSize ||
		p.Senders != want.Senders || p.Rate != want.Rate || p.Duration != want.Duration || p.Size != want.Size || p.Ramp != want.Ramp {
		t.Errorf("got %+v", p)
	}
	if strings.Join(p.Gateways, ",") != "ws://127.0.0.1:9000/ws,ws://h:1/x" || p.GatewaysDefaulted {
		t.Errorf("gateways %v (defaulted %v)", p.Gateways, p.GatewaysDefaulted)
	}
	if p.PG != "" || p.Persister != "" || p.Heartbeat != 0 || len(p.Pids) != 2 || len(p.Procs) != 2 {
		t.Errorf("pg %q persister %q heartbeat %s pids %v procs %v", p.PG, p.Persister, p.Heartbeat, p.Pids, p.Procs)
	}
}

func TestBadParametersAreUsageErrors(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		"unknown scenario":        {"--scenario", "nope"},
		"unknown flag":            {"--nope"},
		"positional":              {"extra"},
		"zero users":              {"--users", "0"},
		"fewer conns than users":  {"--conns", "10"},
		"room bigger than users":  {"--users", "10", "--room-size", "11", "--senders", "5", "--rate", "5"},
		"bad room size":           {"--room-size", "9-3"},
		"bad room size text":      {"--room-size", "ten"},
		"too many rooms a user":   {"--users", "10", "--rooms", "100", "--room-size", "10", "--senders", "10", "--rate", "10"},
		"content too large":       {"--size", "4001"},
		"empty content":           {"--size", "0"},
		"zero duration":           {"--duration", "0s"},
		"negative rate":           {"--rate", "-1"},
		"per-connection rate":     {"--rate", "1000", "--senders", "10"},
		"more senders than users": {"--senders", "1001"},
		"zero ramp":               {"--ramp", "0"},
		"tiny heartbeat":          {"--heartbeat", "10ms"},
		"bad gateway":             {"--gateways", "http://x:1/ws"},
		"bad gateway host":        {"--gateways", "nohostport"},
		"bad api":                 {"--api", "ftp://x"},
		"bad pg url":              {"--pg", "postgres://a b:%zz"},
		"bad pid":                 {"--pids", "x"},
		"bad local addr":          {"--local-addrs", "300.1.1.1"},
		"json dir missing":        {"--json", "/nonexistent-dir/x.json"},
		"idle with rate":          {"--scenario", "idle", "--rate", "5"},
		"max rate flag":           {"--scenario", "max", "--rate", "5"},
		"max steps descending":    {"--scenario", "max", "--steps", "1000,500"},
		"max step too fast":       {"--scenario", "max", "--steps", "500,50000"},
		"artillery no arrivals":   {"--scenario", "artillery", "--arrivals", ""},
		"artillery bad arrival":   {"--scenario", "artillery", "--arrivals", "10,-1"},
		"artillery roomless":      {"--scenario", "artillery", "--rooms", "1"},
		"bad prefix":              {"--user-prefix", "Bench!"},
		"bad steps":               {"--scenario", "max", "--steps", "a,b"},
	}
	for name, args := range cases {
		_, err := ParseArgs(args, io.Discard)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%s %v: got %v, want a UsageError", name, args, err)
		}
	}
}

func TestHelpIsNotAnError(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	_, err := ParseArgs([]string{"-h"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(out.String(), "--scenario") && !strings.Contains(out.String(), "-scenario") {
		t.Errorf("usage does not list the flags:\n%s", out.String())
	}
}

func TestParseSizeDist(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]SizeDist{"10": {10, 10}, "5-50": {5, 50}, " 3 ": {3, 3}, "1-1": {1, 1}} {
		got, err := ParseSizeDist(in)
		if err != nil || got != want {
			t.Errorf("%q: got %v, %v; want %v", in, got, err, want)
		}
		if back, err := ParseSizeDist(got.String()); err != nil || back != got {
			t.Errorf("%v does not round-trip: %v %v", got, back, err)
		}
	}
	for _, in := range []string{"", "0", "-3", "5-", "5-4", "a-b", "1-2-3"} {
		if _, err := ParseSizeDist(in); err == nil {
			t.Errorf("%q: accepted", in)
		}
	}
}
