// Package deploy_test holds deploy/compose to its promises: it loads the
// compose file with the compose-spec library, as `docker compose` does, and
// checks what an operator relies on (data on volumes, replication, health
// checks, pools within max_connections, the real client address, every
// variable a service is given being one it reads), and runs `nginx -t` on
// the edge's configuration.
package deploy_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"relay/pkg/config"
	"relay/tests/e2e/stack"
)

// secrets are the variables the compose file must refuse to start without.
var secrets = []string{"JWT_SECRET", "POSTGRES_PASSWORD", "POSTGRES_REPLICATION_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := stack.WorkspaceRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func composeDir(t *testing.T) string { return filepath.Join(repoRoot(t), "deploy", "compose") }

// load loads the compose file with env as the only environment (no OS
// environment, no .env file), as `docker compose config` would.
func load(t *testing.T, env map[string]string) (*types.Project, error) {
	t.Helper()
	dir := composeDir(t)
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "docker-compose.yml")},
		cli.WithWorkingDirectory(dir), cli.WithEnv(list), cli.WithName("relay"))
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

func testSecrets() map[string]string {
	env := map[string]string{}
	for i, s := range secrets {
		env[s] = strings.Repeat(strconv.Itoa(i), 32)
	}
	return env
}

func project(t *testing.T) *types.Project {
	t.Helper()
	p, err := load(t, testSecrets())
	if err != nil {
		t.Fatalf("compose file does not load: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("no service %s: %v", name, err)
	}
	return s
}

func env(s types.ServiceConfig, name string) (string, bool) {
	v, ok := s.Environment[name]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

// target is the repository path a service's image is built from (the
// Dockerfile's TARGET), "" for images pulled as they are.
func target(s types.ServiceConfig) string {
	if s.Build == nil || s.Build.Args["TARGET"] == nil {
		return ""
	}
	return *s.Build.Args["TARGET"]
}

// appServices are the services built from services/<name>, by name.
func appServices(p *types.Project) map[string]string {
	out := map[string]string{}
	for name, s := range p.Services {
		if t := target(s); strings.HasPrefix(t, "services/") {
			out[name] = strings.TrimPrefix(t, "services/")
		}
	}
	return out
}

// Every secret must be supplied: without any one of them the file does not
// load, and the error names it.
func TestComposeRefusesMissingSecrets(t *testing.T) {
	if _, err := load(t, testSecrets()); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		env := testSecrets()
		delete(env, s)
		_, err := load(t, env)
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("loads without %s (err %v)", s, err)
		}
	}
	// The secrets file is named in the docs and must never be committed.
	ignore, err := os.ReadFile(filepath.Join(repoRoot(t), ".gitignore"))
	if err != nil || !strings.Contains(string(ignore), "/deploy/compose/.env") {
		t.Error(".gitignore must ignore deploy/compose/.env")
	}
	example, err := os.ReadFile(filepath.Join(composeDir(t), "env.example"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if !strings.Contains(string(example), s+"=") {
			t.Errorf("env.example does not list %s", s)
		}
	}
}

// Kafka: three KRaft nodes whose logs are on their volumes (without
// KAFKA_LOG_DIRS the image writes to /tmp/kraft-combined-logs and a new
// container restarts offsets, our seqs, at 0), topics at factor 3 with
// min.insync.replicas 2, and every client seeded with all three.
func TestComposeKafkaReplicatedOnVolumes(t *testing.T) {
	p := project(t)
	var nodes []types.ServiceConfig
	for _, s := range p.Services {
		if strings.HasPrefix(s.Image, "apache/kafka:") {
			nodes = append(nodes, s)
		}
	}
	if len(nodes) != 3 {
		t.Fatalf("%d Kafka nodes, want 3", len(nodes))
	}
	ids := map[string]bool{}
	for _, n := range nodes {
		id, _ := env(n, "KAFKA_NODE_ID")
		ids[id] = true
		dirs, ok := env(n, "KAFKA_LOG_DIRS")
		if !ok {
			t.Errorf("%s: KAFKA_LOG_DIRS unset: the log goes to /tmp/kraft-combined-logs, not the volume", n.Name)
		}
		for _, d := range strings.Split(dirs, ",") {
			if !onNamedVolume(p, n, d) {
				t.Errorf("%s: log dir %q is not on a named volume", n.Name, d)
			}
		}
		voters, _ := env(n, "KAFKA_CONTROLLER_QUORUM_VOTERS")
		if strings.Count(voters, "@") != 3 {
			t.Errorf("%s: quorum voters %q, want the three nodes", n.Name, voters)
		}
		for k, want := range map[string]string{
			"KAFKA_DEFAULT_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "3", "KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE": "false",
		} {
			if v, _ := env(n, k); v != want {
				t.Errorf("%s: %s=%q, want %s", n.Name, k, v, want)
			}
		}
	}
	if len(ids) != 3 {
		t.Errorf("node ids %v are not distinct", ids)
	}
	for name := range appServices(p) {
		s := service(t, p, name)
		brokers, ok := env(s, "KAFKA_BROKERS")
		if !ok {
			continue
		}
		if len(strings.Split(brokers, ",")) != 3 {
			t.Errorf("%s: KAFKA_BROKERS=%q, want all three nodes", name, brokers)
		}
		rf, _ := env(s, "KAFKA_REPLICATION_FACTOR")
		isr, _ := env(s, "KAFKA_MIN_INSYNC_REPLICAS")
		if rf != "3" || isr != "2" {
			t.Errorf("%s: topic replication %q / min ISR %q, want 3 / 2", name, rf, isr)
		}
	}
}

// onNamedVolume reports whether path in service s lies under the target
// of one of its named volumes.
func onNamedVolume(p *types.Project, s types.ServiceConfig, path string) bool {
	for _, v := range s.Volumes {
		if v.Type != types.VolumeTypeVolume {
			continue
		}
		if _, ok := p.Volumes[v.Source]; !ok {
			continue
		}
		if path == v.Target || strings.HasPrefix(path, strings.TrimSuffix(v.Target, "/")+"/") {
			return true
		}
	}
	return false
}

// PostgreSQL: a primary and a streaming replica, each on a volume; the api
// reads from the replica; and every pool that can be open at once fits in
// max_connections (minus the superuser's reserve), on both servers.
func TestComposePostgresReplicaAndPools(t *testing.T) {
	p := project(t)
	primary, replica := service(t, p, "postgres"), service(t, p, "postgres-replica")
	for _, s := range []types.ServiceConfig{primary, replica} {
		if !onNamedVolume(p, s, "/var/lib/postgresql/data") {
			t.Errorf("%s: data directory not on a named volume", s.Name)
		}
		if s.HealthCheck == nil {
			t.Errorf("%s: no health check", s.Name)
		}
	}
	entry, err := os.ReadFile(filepath.Join(composeDir(t), "postgres", "replica-entrypoint.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(entry), "pg_basebackup") || !strings.Contains(string(entry), " -R ") {
		t.Error("the replica is not made with pg_basebackup -R (standby.signal + primary_conninfo)")
	}
	maxPrimary := pgSetting(t, primary.Command, "max_connections")
	maxReplica := pgSetting(t, append(replica.Entrypoint, string(entry)), "max_connections")
	if maxReplica < maxPrimary {
		t.Errorf("replica max_connections %d < primary's %d: a hot standby refuses to start", maxReplica, maxPrimary)
	}

	// Pools: DATABASE_MAX_CONNS (or the configuration's default) of every
	// service connected to a server, plus the connections a service opens
	// beside its pool: the api's outbox relay holds one of its own.
	extra := map[string]int{"api": 1}
	defaults := map[string]int{}
	for _, v := range must(config.Vars[config.Postgres]()) {
		defaults[v.Name], _ = strconv.Atoi(v.Default)
	}
	for _, v := range must(config.Vars[config.Replica]()) {
		defaults[v.Name], _ = strconv.Atoi(v.Default)
	}
	pool := func(s types.ServiceConfig, name string) int {
		if v, ok := env(s, name); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				t.Fatalf("%s: %s=%q", s.Name, name, v)
			}
			return n
		}
		return defaults[name]
	}
	const reserved = 3 // superuser_reserved_connections: psql for the operator
	var onPrimary, onReplica int
	var readers []string
	for name, s := range p.Services {
		if u, ok := env(s, "DATABASE_URL"); ok {
			if !strings.Contains(u, "@postgres:5432/") {
				t.Errorf("%s: DATABASE_URL does not point at the primary", name)
			}
			onPrimary += pool(s, "DATABASE_MAX_CONNS") + extra[name]
		}
		if u, ok := env(s, "DATABASE_REPLICA_URL"); ok {
			if !strings.Contains(u, "@postgres-replica:5432/") {
				t.Errorf("%s: DATABASE_REPLICA_URL does not point at the replica", name)
			}
			onReplica += pool(s, "DATABASE_REPLICA_MAX_CONNS")
			readers = append(readers, name)
		}
	}
	if onPrimary > maxPrimary-reserved {
		t.Errorf("pools on the primary add up to %d > max_connections %d - %d reserved", onPrimary, maxPrimary, reserved)
	}
	if onReplica > maxReplica-reserved {
		t.Errorf("pools on the replica add up to %d > max_connections %d - %d reserved", onReplica, maxReplica, reserved)
	}
	if !slices.Contains(readers, "api") {
		t.Error("the api does not read from the replica (DATABASE_REPLICA_URL)")
	}
	t.Logf("pools: %d of %d on the primary, %d of %d on the replica", onPrimary, maxPrimary, onReplica, maxReplica)
}

// pgSetting finds "max_connections=N" in a command line or script.
func pgSetting(t *testing.T, args []string, name string) int {
	t.Helper()
	for _, a := range args {
		if i := strings.Index(a, name+"="); i >= 0 {
			v := a[i+len(name)+1:]
			if j := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
				v = v[:j]
			}
			n, err := strconv.Atoi(v)
			if err == nil {
				return n
			}
		}
	}
	t.Fatalf("%s not set in %q", name, args)
	return 0
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Redis keeps an append-only file on its volume.
func TestComposeRedisAOF(t *testing.T) {
	p := project(t)
	r := service(t, p, "redis")
	cmd := strings.Join(r.Command, " ")
	if !strings.Contains(cmd, "--appendonly yes") || !strings.Contains(cmd, "--dir /data") {
		t.Errorf("redis command %q: want --appendonly yes in --dir /data", cmd)
	}
	if !onNamedVolume(p, r, "/data") {
		t.Error("redis /data not on a named volume")
	}
}

// Every long-running service has a health check, the application services
// check /ready, and every dependency waits for health (or, for migrate,
// completion) rather than a started container.
func TestComposeHealthChecksAndDependencies(t *testing.T) {
	p := project(t)
	apps := appServices(p)
	if len(slices.Collect(func(yield func(string) bool) {
		for n, svc := range apps {
			if svc == "gateway" && !yield(n) {
				return
			}
		}
	})) != 3 {
		t.Errorf("want three gateways, have %v", apps)
	}
	for name, s := range p.Services {
		if s.Restart == "no" {
			continue
		}
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
			// Jaeger's image has nothing to probe with; nothing waits for it.
			if name != "jaeger" {
				t.Errorf("%s: no health check", name)
			}
		}
		if _, ok := apps[name]; ok {
			if got := strings.Join(s.HealthCheck.Test, " "); got != "CMD /app -ready" {
				t.Errorf("%s: health check %q, want the binary's own /ready probe", name, got)
			}
			if s.Restart != "unless-stopped" && s.Restart != "always" {
				t.Errorf("%s: restart %q", name, s.Restart)
			}
		}
		for dep, d := range s.DependsOn {
			ds := service(t, p, dep)
			want := types.ServiceConditionHealthy
			if ds.Restart == "no" {
				want = types.ServiceConditionCompletedSuccessfully
			} else if ds.HealthCheck == nil {
				want = types.ServiceConditionStarted
			}
			if d.Condition != want {
				t.Errorf("%s depends on %s with %q, want %q", name, dep, d.Condition, want)
			}
		}
	}
}

// Only the edge is published on every interface; the operators' tools
// (Jaeger, Prometheus, Grafana) are on the host's loopback only.
func TestComposePublishedPorts(t *testing.T) {
	p := project(t)
	for name, s := range p.Services {
		for _, port := range s.Ports {
			if name == "edge" {
				continue
			}
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes %s on %q, want 127.0.0.1", name, port.Published, port.HostIP)
			}
		}
	}
	if e := service(t, p, "edge"); len(e.Ports) != 1 || e.Ports[0].Published != "3000" {
		t.Errorf("edge ports %+v, want 3000", e.Ports)
	}
}

// Every file a service mounts from the repository exists, and the build
// context (the repository root) leaves local state and VCS data out.
func TestComposeMountsExistAndContextIsClean(t *testing.T) {
	p := project(t)
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s, which does not exist in the repository", name, v.Source)
			}
		}
		if s.Build != nil {
			if s.Build.Context != repoRoot(t) {
				t.Errorf("%s builds from %s, want the repository root", name, s.Build.Context)
			}
			if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	ignore, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatalf("no .dockerignore: the build context holds .data/ (databases, logs): %v", err)
	}
	lines := strings.Fields(string(ignore))
	for _, must := range []string{".data", ".git", "**/node_modules", "deploy/compose/.env"} {
		if !slices.Contains(lines, must) {
			t.Errorf(".dockerignore does not exclude %s", must)
		}
	}
}

// The api sits behind nginx: it must believe nginx's X-Forwarded-For (or
// every client shares one sign-in rate-limit bucket) and nothing else.
func TestComposeTrustsOnlyTheEdge(t *testing.T) {
	p := project(t)
	edge := service(t, p, "edge")
	var addr netip.Addr
	for net, c := range edge.Networks {
		if c == nil || c.Ipv4Address == "" {
			t.Fatalf("edge has no fixed address on %s", net)
		}
		addr = netip.MustParseAddr(c.Ipv4Address)
		for _, pool := range p.Networks[net].Ipam.Config {
			if pool.IPRange != "" && netip.MustParsePrefix(pool.IPRange).Contains(addr) {
				t.Errorf("edge address %s is inside the dynamic range %s: another container may take it", addr, pool.IPRange)
			}
			if !netip.MustParsePrefix(pool.Subnet).Contains(addr) {
				t.Errorf("edge address %s outside subnet %s", addr, pool.Subnet)
			}
		}
	}
	for name, svc := range appServices(p) {
		if svc != "api" {
			continue
		}
		s := service(t, p, name)
		trusted, ok := env(s, "TRUSTED_PROXIES")
		if !ok {
			t.Fatalf("%s: TRUSTED_PROXIES unset: behind nginx every client shares one rate-limit bucket", name)
		}
		for _, tp := range strings.Split(trusted, ",") {
			pr, err := netip.ParsePrefix(strings.TrimSpace(tp))
			if err != nil {
				t.Fatalf("%s: TRUSTED_PROXIES %q: %v", name, tp, err)
			}
			if pr.Bits() != 32 || pr.Addr() != addr {
				t.Errorf("%s trusts %s, want only the edge %s", name, pr, addr)
			}
		}
	}
}

// Every variable a service is given is one its configuration reads (a
// misspelt name would be silently ignored), and every variable whose
// default only works on a developer's machine (a loopback address, the
// development JWT secret) is given.
func TestComposeEnvMatchesConfiguration(t *testing.T) {
	p := project(t)
	for name, svc := range appServices(p) {
		vars := serviceVars(t, svc)
		s := service(t, p, name)
		known := map[string]bool{}
		for _, v := range vars {
			known[v.Name] = true
		}
		for k := range s.Environment {
			if !known[k] {
				t.Errorf("%s (%s) is given %s, which its configuration does not read", name, svc, k)
			}
		}
		for _, v := range vars {
			if _, ok := env(s, v.Name); ok {
				continue
			}
			if strings.Contains(v.Default, "127.0.0.1") || strings.Contains(v.Default, "localhost") || v.Default == config.DevJWTSecret {
				t.Errorf("%s (%s) is not given %s, whose default %q only works on a developer's machine", name, svc, v.Name, v.Default)
			}
		}
	}
	// migrate reads config.Postgres (tools/cmd/migrate).
	m := service(t, p, "migrate")
	known := map[string]bool{}
	for _, v := range must(config.Vars[config.Postgres]()) {
		known[v.Name] = true
	}
	for k := range m.Environment {
		if !known[k] {
			t.Errorf("migrate is given %s, which it does not read", k)
		}
	}
	if _, ok := env(m, "DATABASE_URL"); !ok {
		t.Error("migrate has no DATABASE_URL")
	}
}

var (
	binsOnce sync.Once
	bins     stack.Binaries
	binsErr  error
)

// serviceVars asks the service's binary which variables it reads
// (`<binary> -env-vars`, config.Vars of its configuration type).
func serviceVars(t *testing.T, svc string) []config.Var {
	t.Helper()
	binsOnce.Do(func() {
		dir, err := stack.BinDir()
		if err != nil {
			binsErr = err
			return
		}
		bins, binsErr = stack.Build(context.Background(), dir)
	})
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	out, err := exec.Command(bins.Path(svc), "-env-vars").Output()
	if err != nil {
		t.Fatalf("%s -env-vars: %v", svc, err)
	}
	var vars []config.Var
	if err := json.Unmarshal(out, &vars); err != nil || len(vars) == 0 {
		t.Fatalf("%s -env-vars: %v %s", svc, err, out)
	}
	return vars
}
