package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The systems the harness compares. direct and gotls are baselines: direct
// is the client talking to the upstream itself, gotls a bare crypto/tls
// server doing the mtls job with nothing else.
const (
	sysEdgegate = "edgegate"
	sysNginx    = "nginx"
	sysHAProxy  = "haproxy"
	sysGoTLS    = "gotls"
	sysDirect   = "direct"
)

// AllSystems lists every system the harness knows, in report order.
var AllSystems = []string{sysEdgegate, sysNginx, sysHAProxy, sysGoTLS, sysDirect}

// peers are the systems edgegate is compared with: ratios are edgegate's
// figure over the best of these.
var peers = []string{sysNginx, sysHAProxy}

// running is one system under test, started for one scenario.
type running struct {
	system string
	flavor flavor
	addr   string // where clients connect; for direct, the upstream
	direct bool   // clients write the PROXY header themselves
	pid    int
	cmd    *exec.Cmd
	exited chan struct{}
	log    *os.File
	// profile is the CPU profile the process writes until stopped.
	profile string
	// legitFrom, when set, is the source address of legitimate clients
	// (which a blocklist must spare).
	legitFrom string
}

// stop ends the system: SIGTERM to the process group the harness started
// it in (which reaches nginx's worker too, and nothing else), SIGKILL after
// 10 s. It is a no-op for direct and for a system already stopped.
func (r *running) stop() {
	if r.cmd == nil {
		return
	}
	select {
	case <-r.exited:
	default:
		syscall.Kill(-r.pid, syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-r.pid, syscall.SIGKILL)
			<-r.exited
		}
	}
	r.log.Close()
	r.cmd = nil
}

// startProcess starts argv in its own process group, pinned to the system
// CPU when pin is set, with its output in logPath, and waits until addr
// accepts connections.
func startProcess(ctx context.Context, system string, f flavor, addr, logPath string, pin bool, env []string, argv ...string) (*running, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	if pin {
		if tp, err := exec.LookPath("taskset"); err == nil {
			argv = append([]string{tp, "-c", fmt.Sprint(systemCPU)}, argv...)
		}
	}
	fmt.Fprintf(logf, "==== %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", system, err)
	}
	r := &running{system: system, flavor: f, addr: addr, pid: cmd.Process.Pid, cmd: cmd, exited: make(chan struct{}), log: logf}
	go func() {
		cmd.Wait()
		close(r.exited)
	}()
	if pin && !strings.HasSuffix(argv[0], "taskset") {
		// No taskset: pin after the start. Threads made before this
		// moment keep running anywhere until pinned; good enough as a
		// fallback, and the report shows which way was used.
		pinTree(r.pid, systemCPU)
	}
	if err := r.waitAccepting(ctx, addr, logPath); err != nil {
		return nil, err
	}
	return r, nil
}

// waitAccepting waits until addr, one of the addresses r serves, accepts
// connections. On failure r is stopped (its log closed) and the error says
// why and points at logPath.
func (r *running) waitAccepting(ctx context.Context, addr, logPath string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-r.exited:
			r.log.Close()
			return fmt.Errorf("%s exited during start-up (%s); see %s", r.system, r.cmd.ProcessState, logPath)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.stop()
			return fmt.Errorf("%s did not accept on %s within 20s: %v; see %s", r.system, addr, err, logPath)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePorts reserves n loopback ports by listening on them all at once, and
// releases them for the systems to bind. The ports come from below the
// kernel's ephemeral range: a system is stopped and started again many times
// in a run, and a port from that range can meanwhile be taken as the local
// port of some connection (or sit in TIME_WAIT after one), so the next start
// would fail to bind it. Ports outside the range are never handed out by
// connect or by a listen on port 0.
func freePorts(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	low := ephemeralLow()
	const first = 10000
	if low-first < 2*n {
		return nil, fmt.Errorf("reserve port: the ephemeral range starts at %d, leaving too few ports below it", low)
	}
	start := first + rand.IntN(low-first)
	var addrs []string
	for i := 0; i < low-first && len(addrs) < n; i++ {
		port := first + (start-first+i)%(low-first)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use: try the next one
		}
		lns = append(lns, l)
		addrs = append(addrs, l.Addr().String())
	}
	if len(addrs) < n {
		return nil, fmt.Errorf("reserve port: only %d of %d ports below %d are free", len(addrs), n, low)
	}
	return addrs, nil
}

// ephemeralLow returns the first port of the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), or Linux's default 32768 when it cannot be
// read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low <= 0 {
		return 32768
	}
	return low
}

// moduleRoot finds the edgegate module's folder above the working directory,
// where `go build ./cmd/edgegate` has to run.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/edgegate/edgegate\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the edgegate module: pass --edgegate PATH")
		}
		dir = parent
	}
}

// buildEdgegate builds cmd/edgegate into dir and returns the binary's path.
func buildEdgegate(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "edgegate")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/edgegate")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/edgegate: %v: %s", err, firstLines(string(out), 5))
	}
	return bin, nil
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], "…")
	}
	return strings.Join(lines, " | ")
}
