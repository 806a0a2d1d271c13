// Package netnstest builds throwaway test hosts for the tests that need a
// network between two parties: a server and a client network namespace
// joined by a veth pair, with addresses from the benchmarking ranges
// (198.18.0.0/15, 2001:2::/48) that are never routed, and what tests on
// them need besides (NeedBPF, SplitConn). The bpf and gateway tests share it.
//
//	p := netnstest.New(t, netnstest.Options{Prefix: "egw", ServerVeth: "egws0", ClientVeth: "egwc0"})
//	ln, err := netnstest.In(p.Server, func() (net.Listener, error) { return net.Listen("tcp", ":443") })
package netnstest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// The hosts' addresses.
var (
	Server4 = netip.MustParseAddr("198.18.0.1")
	Client4 = netip.MustParseAddr("198.18.0.2")
	Server6 = netip.MustParseAddr("2001:2::1")
	Client6 = netip.MustParseAddr("2001:2::2")
)

// Options name the namespaces and veth ends, so that parallel test binaries
// (and a reader of `ip` output) can tell theirs apart.
type Options struct {
	Prefix     string // namespace names are Prefix+"srv-…" and Prefix+"cli-…"
	ServerVeth string
	ClientVeth string
}

// Pair is a server and a client namespace, by name (see /run/netns).
type Pair struct {
	Server, Client string
}

var seq atomic.Int32

// New creates the two namespaces and the veth pair between them: the server
// end has Server4/30 and Server6/64, the client end Client4 and Client6.
// They are deleted when the test ends, whether it passed or not. It skips
// the test without iproute2, or fails it when CI=true.
func New(t testing.TB, o Options) *Pair {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("iproute2 missing: %v", err)
		}
		t.Skipf("iproute2 missing: %v", err)
	}
	id := fmt.Sprintf("%d-%d", os.Getpid(), seq.Add(1))
	p := &Pair{Server: o.Prefix + "srv-" + id, Client: o.Prefix + "cli-" + id}
	for _, ns := range []string{p.Server, p.Client} {
		Run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	Run(t, "ip", "link", "add", o.ServerVeth, "netns", p.Server, "type", "veth", "peer", "name", o.ClientVeth, "netns", p.Client)
	for _, c := range []struct {
		ns, dev string
		a4, a6  netip.Addr
	}{{p.Server, o.ServerVeth, Server4, Server6}, {p.Client, o.ClientVeth, Client4, Client6}} {
		Run(t, "ip", "-n", c.ns, "link", "set", "lo", "up")
		Run(t, "ip", "-n", c.ns, "addr", "add", c.a4.String()+"/30", "dev", c.dev)
		Run(t, "ip", "-n", c.ns, "addr", "add", c.a6.String()+"/64", "dev", c.dev, "nodad")
		Run(t, "ip", "-n", c.ns, "link", "set", c.dev, "up")
	}
	return p
}

// Run runs a command and fails the test, with its output, if it fails.
func Run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// In runs f on an OS thread that has joined the named network namespace,
// then moves the thread back. Only that locked thread changes namespace;
// sockets f creates keep the namespace for their lifetime, and goroutines f
// starts run on other threads, in the process's namespace. If the way back
// fails, the thread stays locked and the runtime discards it when the
// goroutine ends, so no other goroutine ever runs in the wrong namespace.
func In[T any](name string, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The result is sent only after both namespace descriptors are
		// closed: a caller counting its descriptors must not see them.
		r := inOnThread(name, func() (r result) {
			r.v, r.err = f()
			return r
		}, func(err error) result { return result{err: err} })
		ch <- r
	}()
	r := <-ch
	return r.v, r.err
}

// inOnThread runs f on the calling goroutine's thread moved into the
// network namespace name, and moves the thread back; a thread that cannot
// be moved back stays locked, so that it ends with its goroutine. Failures
// before f runs are given to fail. Both namespace descriptors are closed
// when it returns.
func inOnThread[R any](name string, f func() R, fail func(error) R) R {
	runtime.LockOSThread()
	home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fail(fmt.Errorf("open own netns: %w", err))
	}
	defer unix.Close(home)
	target, err := unix.Open(filepath.Join("/run/netns", name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fail(fmt.Errorf("open netns %s: %w", name, err))
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fail(fmt.Errorf("setns %s: %w", name, err))
	}
	r := f()
	if err := unix.Setns(home, unix.CLONE_NEWNET); err == nil {
		runtime.UnlockOSThread()
	}
	return r
}

// NeedBPF skips the test without root or BPF, and fails it instead when
// CI=true (CI runs as root, so there a skip would hide a broken test).
func NeedBPF(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	} else if err := rlimit.RemoveMemlock(); err != nil {
		why = fmt.Sprintf("remove memlock limit: %v", err)
	} else if m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}); err != nil {
		why = fmt.Sprintf("create a BPF map: %v", err)
	} else {
		m.Close()
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("BPF tests need root and BPF (%s); CI=true, so this fails instead of skipping", why)
	}
	t.Skipf("BPF tests need root and BPF: %s", why)
}

// SplitConn writes its first Write in pieces of 1, 4 and 4 bytes and the
// rest: with TCP_NODELAY each is a segment of its own, so a ClientHello's
// first 9 bytes are judged across three segments.
type SplitConn struct {
	net.Conn
	done bool
}

func (c *SplitConn) Write(b []byte) (int, error) {
	if c.done {
		return c.Conn.Write(b)
	}
	c.done = true
	n := 0
	for _, size := range []int{1, 4, 4, len(b)} {
		size = min(size, len(b)-n)
		if size == 0 {
			break
		}
		m, err := c.Conn.Write(b[n : n+size])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
