// Package bench is edgegate's benchmark harness: it starts edgegate, nginx,
// HAProxy and two baselines on loopback from configurations it generates,
// drives them with its own load generator, measures throughput, latency and
// the CPU time each system spends per operation, and writes a Markdown
// table, a JSON file and an SVG chart.
//
// Typical use (what cmd/edgegate-bench does):
//
//	rep, err := bench.Run(ctx, bench.Options{Quick: true, Out: "bench/out/x"}, "")
//	if err != nil { ... }
//	fmt.Print(rep.Summary())
//
// The system under test runs pinned to CPU 0 with one worker; the harness
// process (load generator and upstreams) pins itself to CPU 1. On a 2-core
// machine the load generator may be the bottleneck, so every row also
// carries the system's CPU time per 1,000 operations, which stays comparable
// when the client caps the rate.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Options selects and sizes a harness run. The zero value runs every
// scenario against every system with the default (long) durations, writing
// to bench/out/<timestamp>.
type Options struct {
	// Out is the output folder; default bench/out/<timestamp>.
	Out string
	// Scenarios and Systems select by name; empty means all.
	Scenarios []string
	Systems   []string
	// Quick shortens every duration so the whole run takes a few minutes;
	// explicit Duration, Warmup and Reps still win.
	Quick bool
	// Duration of one measured repetition (default 5s; quick 1s), Warmup
	// before the repetitions (default 2s; quick 0.5s), Reps repetitions
	// (default 5; quick 3).
	Duration, Warmup time.Duration
	Reps             int
	// Concurrency of the closed-loop load generator (default 32).
	Concurrency int
	// IdleConns are the numbers of idle connections at which
	// idle-connections measures each system, to fit memory against them
	// (default 1000, 5000, 9000; quick 200, 500, 1000). Each is capped so
	// that every process stays under the 20,000-descriptor limit.
	IdleConns []int
	// Profile writes CPU profiles of the Go systems into Out/profiles,
	// with their top entries: gotls, and edgegate run as its gateway
	// package inside a child of the harness (same code as the binary's
	// `run`, plus runtime/pprof).
	Profile bool
	// Syscalls counts, in passthrough-connect, each system's system calls
	// per connection under strace for one more repetition's duration,
	// after the measured ones (strace slows the system too much for them).
	Syscalls bool
	// Edgegate is the edgegate binary; empty builds ./cmd/edgegate.
	Edgegate string
	// HellosDir holds the captured ClientHellos; default testdata/hellos
	// of the module.
	HellosDir string
	// NoPin leaves every process where the scheduler puts it (tests, a
	// 1-CPU machine). Each system still runs one worker: GOMAXPROCS=1,
	// nginx worker_processes 1, HAProxy nbthread 1.
	NoPin bool
	// NetnsPrefix starts the names of the network namespace and the veth
	// pair the not-tls-flood scenario makes (default "egb"; at most 8
	// characters, for interface names' 15).
	NetnsPrefix string
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

func (o *Options) setDefaults() {
	if o.Out == "" {
		o.Out = filepath.Join("bench", "out", time.Now().UTC().Format("20060102-150405"))
	}
	if o.Duration == 0 {
		o.Duration = 5 * time.Second
		if o.Quick {
			o.Duration = time.Second
		}
	}
	if o.Warmup == 0 {
		o.Warmup = 2 * time.Second
		if o.Quick {
			o.Warmup = 500 * time.Millisecond
		}
	}
	if o.Reps == 0 {
		o.Reps = 5
		if o.Quick {
			o.Reps = 3
		}
	}
	if o.NetnsPrefix == "" {
		o.NetnsPrefix = "egb"
	}
	if o.Concurrency == 0 {
		o.Concurrency = 32
	}
	if len(o.IdleConns) == 0 {
		o.IdleConns = []int{1000, 5000, 9000}
		if o.Quick {
			o.IdleConns = []int{200, 500, 1000}
		}
	}
	// The harness holds a client descriptor and an upstream descriptor per
	// idle connection, and so does each system: 2N plus listeners and
	// logs must stay under 20,000.
	o.IdleConns = countsUnder(slices.Sorted(slices.Values(o.IdleConns)), maxConns)
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// harness is the state of one run.
type harness struct {
	opts    Options
	out     string
	ups     *upstreams
	pki     *pkiFiles
	hellos  []Hello
	goHello []byte            // Go's client hello for bulk.bench.test and idle.bench.test
	bin     map[string]string // system -> binary
	missing map[string]string // system -> why it cannot run
	ports   map[string]string // system/flavor -> listen address
	closed  string
	rep     *Report
}

// Run runs the selected scenarios against the selected systems and writes
// report.md, results.json, chart.svg, the generated configs and the
// systems' logs into opts.Out. An error means the harness itself could not
// run; a system that is missing or fails is a row in the report.
// command is recorded in the report so a reader can repeat the run.
func Run(ctx context.Context, opts Options, command string) (*Report, error) {
	opts.setDefaults()
	for _, s := range opts.Scenarios {
		if findScenario(s) == nil {
			return nil, fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(scenarioNames(), ", "))
		}
	}
	if opts.Syscalls && len(opts.Scenarios) > 0 && !slices.Contains(opts.Scenarios, "passthrough-connect") {
		return nil, errors.New("system calls are counted in passthrough-connect, which is not among the scenarios")
	}
	for _, s := range opts.Systems {
		if !slices.Contains(AllSystems, s) {
			return nil, fmt.Errorf("unknown system %q (have %s)", s, strings.Join(AllSystems, ", "))
		}
	}
	h := &harness{opts: opts, out: opts.Out, bin: map[string]string{}, missing: map[string]string{}, ports: map[string]string{}}
	for _, d := range []string{"configs", "logs", "pki", "run", "profiles"} {
		if err := os.MkdirAll(filepath.Join(h.out, d), 0o755); err != nil {
			return nil, fmt.Errorf("make output folder: %w", err)
		}
	}
	if !opts.NoPin {
		if !cpusAvailable() {
			return nil, errors.New("pinning needs CPUs 0 and 1 (use NoPin on a 1-CPU machine, and read the figures with care)")
		}
		if err := pinSelf(loadCPU); err != nil {
			return nil, err
		}
	}
	h.progress("edgegate-bench: output in %s", h.out)
	if err := h.setup(ctx); err != nil {
		return nil, err
	}
	defer h.ups.close()

	h.rep = &Report{
		Command: command,
		Started: time.Now().UTC(),
		Machine: machineFacts(ctx, h.bin),
		Options: reportOptions(opts),
		Missing: h.missing,
	}
	for _, sc := range scenarios {
		if len(opts.Scenarios) > 0 && !slices.Contains(opts.Scenarios, sc.name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		h.progress("== %s: %s", sc.name, sc.about)
		rows := sc.run(ctx, h, sc)
		h.rep.Rows = append(h.rep.Rows, rows...)
		// Write after every scenario so an interrupted run keeps what it
		// measured.
		h.rep.Finished = time.Now().UTC()
		if err := h.rep.write(h.out); err != nil {
			return h.rep, err
		}
	}
	h.rep.Finished = time.Now().UTC()
	if err := h.rep.write(h.out); err != nil {
		return h.rep, err
	}
	h.progress("done: %s", filepath.Join(h.out, "report.md"))
	return h.rep, ctx.Err()
}

func (h *harness) progress(format string, a ...any) {
	fmt.Fprintf(h.opts.Progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// selected reports whether the run includes system s.
func (h *harness) selected(s string) bool {
	return len(h.opts.Systems) == 0 || slices.Contains(h.opts.Systems, s)
}

// setup finds or builds the systems, makes the PKI, loads the hellos,
// starts the upstreams and writes every config the run will use.
func (h *harness) setup(ctx context.Context) error {
	var err error
	if h.pki, err = makePKI(filepath.Join(h.out, "pki")); err != nil {
		return err
	}
	dir := h.opts.HellosDir
	if dir == "" {
		if root, err := moduleRoot(); err == nil {
			dir = filepath.Join(root, "testdata", "hellos")
		}
	}
	if h.hellos, err = loadHellos(dir); err != nil {
		return err
	}
	for _, hl := range h.hellos {
		h.progress("hello %s: %d bytes, SNI %s", hl.Name, len(hl.Bytes), hl.ServerName)
	}
	if h.goHello, err = goClientHello(bulkName, nil); err != nil {
		return err
	}
	if h.ups, err = startUpstreams(); err != nil {
		return err
	}
	h.findSystems(ctx)
	return h.writeConfigs()
}

func (h *harness) findSystems(ctx context.Context) {
	if h.selected(sysEdgegate) {
		if h.opts.Edgegate != "" {
			h.bin[sysEdgegate] = h.opts.Edgegate
		} else if bin, err := buildEdgegate(ctx, filepath.Join(h.out, "run")); err != nil {
			h.missing[sysEdgegate] = err.Error()
		} else {
			h.bin[sysEdgegate] = bin
		}
	}
	for _, s := range []string{sysNginx, sysHAProxy} {
		if !h.selected(s) {
			continue
		}
		if p, err := exec.LookPath(s); err != nil {
			h.missing[s] = s + " is not installed (apt-get install " + s + ")"
		} else {
			h.bin[s] = p
		}
	}
	if h.selected(sysGoTLS) {
		if exe, err := os.Executable(); err != nil {
			h.missing[sysGoTLS] = err.Error()
		} else {
			h.bin[sysGoTLS] = exe
		}
	}
	for s, why := range h.missing {
		h.progress("system %s missing: %s", s, why)
	}
	for _, s := range AllSystems {
		if b, ok := h.bin[s]; ok {
			h.progress("system %s: %s", s, b)
		}
	}
}

// configFile is where the config of system s for flavor f lives.
func (h *harness) configFile(s string, f flavor) string {
	ext := map[string]string{sysEdgegate: "yaml", sysNginx: "conf", sysHAProxy: "cfg", sysGoTLS: "json"}[s]
	return filepath.Join(h.out, "configs", fmt.Sprintf("%s-%s.%s", s, f, ext))
}

func (h *harness) params(f flavor, listen string) configParams {
	var names []string
	for _, hl := range h.hellos {
		if !slices.Contains(names, hl.ServerName) {
			names = append(names, hl.ServerName)
		}
	}
	if !slices.Contains(names, connectName) {
		names = append(names, connectName)
	}
	ca := h.pki.caFile
	if f == flavorMTLSTestCA {
		ca = h.pki.testCAFile
	}
	return configParams{
		Flavor: f, Listen: listen, ConnectNames: names,
		Connect: h.ups.connect.addr(), Bulk: h.ups.bulk.addr(), Idle: h.ups.idle.addr(),
		ClosedAddr: h.closed, HTTP: h.ups.http.addr(),
		CAFile: ca, ServerCert: h.pki.serverCert, ServerKey: h.pki.serverKey, ServerPEM: h.pki.serverPEM,
		RunDir: filepath.Join(h.out, "run"),
	}
}

// writeConfigs writes every system's config for every job once, with a
// fixed port each, so the files next to the results are exactly what ran.
// edgegate's mtls jobs also serve metrics, for the chain cache's counters.
func (h *harness) writeConfigs() error {
	addrs, err := freePorts(14)
	if err != nil {
		return err
	}
	h.closed = addrs[0]
	i := 1
	for _, s := range []string{sysEdgegate, sysNginx, sysHAProxy, sysGoTLS} {
		for _, f := range []flavor{flavorPassthrough, flavorMTLS, flavorMTLSTestCA} {
			if s == sysGoTLS && f == flavorPassthrough {
				continue
			}
			h.ports[s+"/"+f.String()] = addrs[i]
			i++
			p := h.params(f, h.ports[s+"/"+f.String()])
			if s == sysEdgegate && f.terminates() {
				h.ports[s+"/"+f.String()+"/metrics"] = addrs[i]
				p.Metrics = addrs[i]
				i++
			}
			var text string
			switch s {
			case sysEdgegate:
				text = edgegateConfig(p)
			case sysNginx:
				text = nginxConfig(p)
			case sysHAProxy:
				text = haproxyConfig(p)
			case sysGoTLS:
				text = gotlsConfigJSON(p)
			}
			if err := os.WriteFile(h.configFile(s, f), []byte(text), 0o644); err != nil {
				return fmt.Errorf("write config: %w", err)
			}
		}
	}
	return nil
}

// start starts system s for job f, for the scenario tag (used to name the
// log and the profile). direct needs no process.
func (h *harness) start(ctx context.Context, s string, f flavor, tag string) (*running, error) {
	if why, ok := h.missing[s]; ok {
		return nil, errors.New(why)
	}
	if s == sysDirect {
		addr := h.ups.connect.addr()
		if f.terminates() {
			addr = h.ups.http.addr()
		}
		return &running{system: s, flavor: f, addr: addr, direct: true}, nil
	}
	addr := h.ports[s+"/"+f.String()]
	cfg := h.configFile(s, f)
	logPath := filepath.Join(h.out, "logs", s+"-"+tag+".log")
	pin := !h.opts.NoPin
	switch s {
	case sysEdgegate:
		r, err := h.startEdgegate(ctx, f, addr, cfg, logPath, pin, tag)
		if err != nil {
			return nil, err
		}
		// A listener takes connections into its backlog once bound,
		// and the gateway binds its metrics endpoint after its
		// listeners (and the guard): the scenarios that read the
		// metrics wait for that too.
		if m, ok := h.ports[s+"/"+f.String()+"/metrics"]; ok {
			if err := r.waitAccepting(ctx, m, logPath); err != nil {
				return nil, err
			}
		}
		return r, nil
	case sysNginx:
		return startProcess(ctx, s, f, addr, logPath, pin, nil, h.bin[s], "-c", cfg, "-e", filepath.Join(h.out, "logs", "nginx-error.log"))
	case sysHAProxy:
		return startProcess(ctx, s, f, addr, logPath, pin, nil, h.bin[s], "-db", "-f", cfg)
	case sysGoTLS:
		if !f.terminates() {
			return nil, errors.New("gotls only does the mtls job")
		}
		env := []string{"GOMAXPROCS=1", childEnv + "=gotls", childConfigEnv + "=" + cfg}
		var prof string
		if h.opts.Profile {
			prof = filepath.Join(h.out, "profiles", "gotls-"+tag+".pprof")
			env = append(env, childProfileEnv+"="+prof)
		}
		r, err := startProcess(ctx, s, f, addr, logPath, pin, env, h.bin[s])
		if r != nil {
			r.profile = prof
		}
		return r, err
	}
	return nil, fmt.Errorf("unknown system %s", s)
}

// startEdgegate starts the gateway for job f: its binary, or with --profile
// the gateway package in a child of the harness, which writes a CPU profile
// (see runGatewayChild).
func (h *harness) startEdgegate(ctx context.Context, f flavor, addr, cfg, logPath string, pin bool, tag string) (*running, error) {
	if !h.opts.Profile {
		return startProcess(ctx, sysEdgegate, f, addr, logPath, pin, []string{"GOMAXPROCS=1"}, h.bin[sysEdgegate], "run", "--config", cfg)
	}
	prof := filepath.Join(h.out, "profiles", "edgegate-"+tag+".pprof")
	env := []string{"GOMAXPROCS=1", childEnv + "=edgegate", childConfigEnv + "=" + cfg, childProfileEnv + "=" + prof}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, err := startProcess(ctx, sysEdgegate, f, addr, logPath, pin, env, self)
	if r != nil {
		r.profile = prof
	}
	return r, err
}
