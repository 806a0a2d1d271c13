package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// The namespaces' addresses: 198.18.0.0/15 and 2001:2::/48 are reserved for
// benchmarking and never routed.
var (
	nsServer4 = netip.MustParseAddr("198.18.0.1")
	nsClient4 = netip.MustParseAddr("198.18.0.2")
	nsServer6 = netip.MustParseAddr("2001:2::1")
	nsClient6 = netip.MustParseAddr("2001:2::2")
)

const (
	// The veth ends. Names are per namespace, but they differ from the bpf
	// package's so that a reader of `ip link` output can tell the two
	// test binaries (which run at the same time) apart.
	nsServerVeth = "egws0"
	nsClientVeth = "egwc0"
	// nsSmallMSS is Linux's minimum MSS: a post-quantum ClientHello then
	// spans about 20 segments.
	nsSmallMSS = 88
)

// needBPF skips the test without root or BPF, and fails it instead when
// CI=true (CI runs as root, so there a skip would hide a broken test).
func needBPF(t testing.TB) {
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
		if _, err := exec.LookPath("ip"); err != nil {
			why = fmt.Sprintf("iproute2 missing: %v", err)
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("eBPF guard tests need root, BPF and iproute2 (%s); CI=true, so this fails instead of skipping", why)
	}
	t.Skipf("eBPF guard tests need root, BPF and iproute2: %s", why)
}

// testPinPath returns a fresh bpffs folder for a gateway's pinned maps,
// removed when the test ends, so tests never touch the default
// /sys/fs/bpf/edgegate or each other's blocklists.
func testPinPath(t testing.TB) string {
	t.Helper()
	root := "/sys/fs/bpf/edgegate-test"
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatalf("bpffs: %v", err)
	}
	dir, err := os.MkdirTemp(root, "gateway-"+strings.ReplaceAll(t.Name(), "/", "_"))
	if err != nil {
		t.Fatalf("bpffs: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

var netnsSeq atomic.Int32

// testNetns is a server and a client namespace joined by a veth pair:
// server 198.18.0.1 and 2001:2::1 on egws0, client 198.18.0.2 and
// 2001:2::2 on egwc0.
type testNetns struct {
	server, client string
}

func runCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newTestNetns creates the namespaces; they (and the veth pair with them)
// are deleted when the test ends, whether it passed or not.
func newTestNetns(t testing.TB) *testNetns {
	t.Helper()
	id := fmt.Sprintf("%d-%d", os.Getpid(), netnsSeq.Add(1))
	n := &testNetns{server: "egwsrv-" + id, client: "egwcli-" + id}
	for _, ns := range []string{n.server, n.client} {
		runCmd(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	runCmd(t, "ip", "link", "add", nsServerVeth, "netns", n.server, "type", "veth", "peer", "name", nsClientVeth, "netns", n.client)
	for _, c := range []struct {
		ns, dev string
		a4, a6  netip.Addr
	}{{n.server, nsServerVeth, nsServer4, nsServer6}, {n.client, nsClientVeth, nsClient4, nsClient6}} {
		runCmd(t, "ip", "-n", c.ns, "link", "set", "lo", "up")
		runCmd(t, "ip", "-n", c.ns, "addr", "add", c.a4.String()+"/30", "dev", c.dev)
		runCmd(t, "ip", "-n", c.ns, "addr", "add", c.a6.String()+"/64", "dev", c.dev, "nodad")
		runCmd(t, "ip", "-n", c.ns, "link", "set", c.dev, "up")
	}
	return n
}

// inNetns runs f on an OS thread that has joined the named network
// namespace, then moves the thread back. Only that locked thread changes
// namespace; sockets f creates keep the namespace for their lifetime, and
// goroutines f starts run on other threads, in the process's namespace. If
// the way back fails, the thread stays locked and the runtime discards it
// when the goroutine ends, so no other goroutine ever runs in the wrong
// namespace.
func inNetns[T any](name string, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open own netns: %w", err)}
			return
		}
		defer unix.Close(home)
		target, err := unix.Open(filepath.Join("/run/netns", name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open netns %s: %w", name, err)}
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("setns %s: %w", name, err)}
			return
		}
		var r result
		r.v, r.err = f()
		if err := unix.Setns(home, unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		ch <- r
	}()
	r := <-ch
	return r.v, r.err
}

// dial connects from the client namespace to dst:443 with the smallest
// MSS, so every segment the client sends carries at most 88 bytes.
func (n *testNetns) dial(ctx context.Context, dst netip.Addr) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, nsSmallMSS)
		})
		return errors.Join(err, serr)
	}}
	return inNetns(n.client, func() (net.Conn, error) {
		return d.DialContext(ctx, "tcp", netip.AddrPortFrom(dst, 443).String())
	})
}
