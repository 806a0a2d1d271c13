package bench

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/edgegate/edgegate/bpf"
	"golang.org/x/sys/unix"
)

// netnsPair is a network namespace for the system under test, joined to the
// harness's namespace by a veth pair, so the eBPF guard can sit on the
// inner end's ingress as it would on a real interface. Addresses come from
// 198.18.0.0/15 (RFC 2544, benchmarking), one /29 per harness process.
type netnsPair struct {
	name         string // namespace
	outer, inner string // veth ends
	outerIP      string // harness side
	innerIP      string // system side
	// legitIP is a second harness-side address for legitimate clients,
	// so a blocklist that catches the flood's source spares them.
	legitIP string
}

// newNetnsPair makes a pair whose namespace and veth names start with
// prefix and end with the harness's process id, so that runs sharing a
// machine can tell theirs apart.
func newNetnsPair(prefix string) (*netnsPair, error) {
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("network namespaces need iproute2's ip: %w", err)
	}
	if len(prefix) > 8 {
		return nil, fmt.Errorf("network namespace prefix %q: longer than 8 characters", prefix)
	}
	pid := os.Getpid()
	n := &netnsPair{
		name:  fmt.Sprintf("%sns%d", prefix, pid),
		outer: fmt.Sprintf("%s%do", prefix, pid%1000000),
		inner: fmt.Sprintf("%s%di", prefix, pid%1000000),
	}
	// Third octet 100-199: clear of the x.x.0.x addresses tests tend to use.
	a, b := 18+(pid>>14)%2, 100+(pid>>6)%100
	base := (pid % 32) * 8
	n.outerIP = fmt.Sprintf("198.%d.%d.%d", a, b, base+1)
	n.innerIP = fmt.Sprintf("198.%d.%d.%d", a, b, base+2)
	n.legitIP = fmt.Sprintf("198.%d.%d.%d", a, b, base+3)
	steps := [][]string{
		{"netns", "add", n.name},
		{"link", "add", n.outer, "type", "veth", "peer", "name", n.inner},
		{"link", "set", n.inner, "netns", n.name},
		{"addr", "add", n.outerIP + "/29", "dev", n.outer},
		{"addr", "add", n.legitIP + "/29", "dev", n.outer},
		{"link", "set", n.outer, "up"},
		{"-n", n.name, "addr", "add", n.innerIP + "/29", "dev", n.inner},
		{"-n", n.name, "link", "set", n.inner, "up"},
		{"-n", n.name, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			n.close()
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return n, nil
}

// close removes the namespace and the veth pair (deleting one end deletes
// both); it is safe on a half-made pair.
func (n *netnsPair) close() {
	exec.Command("ip", "link", "del", n.outer).Run()
	exec.Command("ip", "netns", "del", n.name).Run()
}

// inside runs f on an OS thread that has joined the namespace, for calls
// that act on the current namespace (attaching XDP by interface name).
func (n *netnsPair) inside(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it ends with this goroutine, so
		// no other goroutine ever runs in the namespace by accident.
		runtime.LockOSThread()
		target, err := os.Open(filepath.Join("/run/netns", n.name))
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// openGuard attaches the guard to the inner veth end, guarding ports, with
// its pinned state in a folder of its own that close removes.
func (n *netnsPair) openGuard(ports ...uint16) (*bpf.Guard, func(), error) {
	pin := filepath.Join("/sys/fs/bpf", "edgegate-bench-"+n.name)
	var g *bpf.Guard
	err := n.inside(func() error {
		var err error
		g, err = bpf.Open(bpf.Config{Interfaces: []string{n.inner}, Ports: ports, PinPath: pin},
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		return err
	})
	if err != nil {
		os.RemoveAll(pin)
		return nil, nil, err
	}
	return g, func() {
		g.Close()
		os.RemoveAll(pin)
	}, nil
}
