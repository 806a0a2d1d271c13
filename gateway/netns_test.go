package gateway

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edgegate/edgegate/bpf/netnstest"
)

// The namespaces' addresses: 198.18.0.0/15 and 2001:2::/48 are reserved for
// benchmarking and never routed.
var (
	nsServer4 = netnstest.Server4
	nsClient4 = netnstest.Client4
	nsServer6 = netnstest.Server6
	nsClient6 = netnstest.Client6
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

// needBPF skips or fails the test without root or BPF (netnstest.NeedBPF);
// iproute2 is checked where the namespaces are made.
func needBPF(t testing.TB) { t.Helper(); netnstest.NeedBPF(t) }

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

// testNetns is a server and a client namespace joined by a veth pair:
// server 198.18.0.1 and 2001:2::1 on egws0, client 198.18.0.2 and
// 2001:2::2 on egwc0.
type testNetns struct {
	server, client string
}

// newTestNetns creates the namespaces; they (and the veth pair with them)
// are deleted when the test ends, whether it passed or not.
func newTestNetns(t testing.TB) *testNetns {
	t.Helper()
	p := netnstest.New(t, netnstest.Options{Prefix: "egw", ServerVeth: nsServerVeth, ClientVeth: nsClientVeth})
	return &testNetns{server: p.Server, client: p.Client}
}

// inNetns runs f on a thread inside the named namespace (netnstest.In).
func inNetns[T any](name string, f func() (T, error)) (T, error) { return netnstest.In(name, f) }

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
