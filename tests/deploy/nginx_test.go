package deploy_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	commentRE  = regexp.MustCompile(`(?m)#.*$`)
	upstreamRE = regexp.MustCompile(`upstream\s+(\w+)\s*\{([^}]*)\}`)
	serverRE   = regexp.MustCompile(`(?m)^\s*server\s+([A-Za-z0-9.-]+):(\d+)`)
	locationRE = regexp.MustCompile(`location\s+([^{]+?)\s*\{([^}]*)\}`)
)

func nginxConf(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(composeDir(t), "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	return commentRE.ReplaceAllString(string(b), "")
}

func upstreams(conf string) map[string]string {
	out := map[string]string{}
	for _, m := range upstreamRE.FindAllStringSubmatch(conf, -1) {
		out[m[1]] = m[2]
	}
	return out
}

// The edge's routing: gateways chosen by ip_hash (a Socket.IO polling
// session is many requests that must reach one gateway) among exactly the
// compose file's gateways, the client's address passed on by every proxied
// location, and /health from the api's readiness, not a static 200.
func TestNginxRoutesToComposeServices(t *testing.T) {
	p := project(t)
	conf := nginxConf(t)
	ups := upstreams(conf)
	gw, ok := ups["gateways"]
	if !ok {
		t.Fatal("no upstream gateways")
	}
	if !regexp.MustCompile(`(?m)^\s*ip_hash;`).MatchString(gw) {
		t.Error("upstream gateways is not ip_hash: Socket.IO polling requests of one session would reach different gateways")
	}
	var servers []string
	for _, m := range serverRE.FindAllStringSubmatch(gw, -1) {
		servers = append(servers, m[1])
		s := service(t, p, m[1])
		addr, _ := env(s, "HTTP_ADDR")
		if _, port, _ := net.SplitHostPort(addr); port != m[2] {
			t.Errorf("nginx reaches %s on port %s, it listens on %q", m[1], m[2], addr)
		}
	}
	var gateways []string
	for name, svc := range appServices(p) {
		if svc == "gateway" {
			gateways = append(gateways, name)
		}
	}
	slices.Sort(servers)
	slices.Sort(gateways)
	if !slices.Equal(servers, gateways) {
		t.Errorf("upstream gateways %v, compose gateways %v", servers, gateways)
	}
	if m := serverRE.FindStringSubmatch(ups["api"]); m == nil || m[1] != "api" {
		t.Errorf("upstream api: %q", ups["api"])
	}

	proxied := 0
	for _, m := range locationRE.FindAllStringSubmatch(conf, -1) {
		loc, body := m[1], m[2]
		if !strings.Contains(body, "proxy_pass") {
			continue
		}
		proxied++
		for _, h := range []string{"X-Forwarded-For $proxy_add_x_forwarded_for", "X-Real-IP $remote_addr"} {
			if !strings.Contains(body, "proxy_set_header "+h) {
				t.Errorf("location %s does not set %s", loc, h)
			}
		}
		if loc == "= /health" && !strings.Contains(body, "proxy_pass http://api/ready;") {
			t.Errorf("/health is not the api's readiness: %q", body)
		}
	}
	if proxied < 3 {
		t.Errorf("%d proxied locations, want /api/, /health, /ws and /socket.io/", proxied)
	}
	if strings.Contains(conf, "return 200") {
		t.Error("a static 200 in the edge configuration")
	}
}

// `nginx -t` accepts the edge's configuration. nginx resolves upstream
// host names while loading it, and the compose names (api, gateway-1, ...)
// exist only inside the compose network, so the test copy has those names,
// and nothing else, replaced by 127.0.0.1.
func TestNginxConfigIsValid(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			t.Fatalf("nginx not installed (run `scripts/cluster.sh tools`, which `make test` does): %v", err)
		}
		bin = "/usr/sbin/nginx"
	}
	b, err := os.ReadFile(filepath.Join(composeDir(t), "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	p := project(t)
	mapped := 0
	conf := serverRE.ReplaceAllStringFunc(string(b), func(s string) string {
		m := serverRE.FindStringSubmatch(s)
		if _, err := p.GetService(m[1]); err != nil {
			t.Errorf("upstream server %s is not a compose service", m[1])
			return s
		}
		mapped++
		return strings.Replace(s, m[1]+":", "127.0.0.1:", 1)
	})
	if mapped < 4 {
		t.Fatalf("mapped %d upstream servers, want the api and three gateways", mapped)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-t", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", file,
		"-g", "pid "+filepath.Join(dir, "nginx.pid")+";").CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "test is successful") {
		t.Fatalf("nginx -t: %s", out)
	}

	// And it fails on a broken file: the check is real.
	if err := os.WriteFile(file, []byte(strings.Replace(conf, "ip_hash;", "ip_hash", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", file).CombinedOutput(); err == nil {
		t.Fatalf("nginx -t accepted a broken file: %s", out)
	}
}
