package gateway

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/cloudflare"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/proxyheader"
	"github.com/edgegate/edgegate/gateway/testpki"
)

// TestReloadUpdatesGuard reloads a guarded gateway in a network namespace
// and watches the kernel follow each change: a listener switched to
// accept_proxy_protocol has its PROXY headers let through (and loses the
// exemption when switched back), allow_only: [cloudflare] follows a
// Cloudflare set installed after start once an unchanged configuration is
// reloaded, never_block spares a source that offends, and a change the
// kernel refuses is a refused reload that leaves the guard as it was.
func TestReloadUpdatesGuard(t *testing.T) {
	needBPF(t)
	n := newTestNetns(t)
	p := newPKI(t)
	passUp := newTLSUpstream(t, p)
	appUp := newUpstream(t, "tcp", "127.0.0.1:0", true, []byte("PONG"))
	dir := t.TempDir()
	cfDir := filepath.Join(dir, "cloudflare")
	path := filepath.Join(dir, "edgegate.yaml")
	base := "cloudflare_data: " + cfDir + "\n" +
		guardYAML(p, "xdp-generic", testPinPath(t), "1m", passUp.address(), appUp.address())
	write := func(proxy bool, ebpf string) {
		t.Helper()
		y := base
		if proxy {
			y = strings.Replace(y, `listen: [{address: ":443"}]`,
				`listen: [{address: ":443", accept_proxy_protocol: true, trusted_proxies: ["198.18.0.2", "2001:2::2"]}]`, 1)
		}
		if strings.Contains(ebpf, "blocklist:") {
			y = strings.Replace(y, "  blocklist: {after: 3, within: 1m, for: 1m}\n", "", 1)
		}
		y = strings.Replace(y, "  flow_table_size: 4096\n", "  flow_table_size: 4096\n"+ebpf, 1)
		if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(false, "")
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := startInNetns(t, n.server, cfg, nil)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	reload := func() {
		t.Helper()
		if err := srv.ReloadFile(path); err != nil {
			t.Fatalf("reload: %v", err)
		}
	}

	// A PROXY header on a plain TLS listener: dropped in the kernel.
	dropped := packets(t, srv, "drop_not_tls")
	sendProxyHeader(t, n)
	waitMetric(t, srv, dropped+1, "edgegate_bpf_packets_total", "verdict", "drop_not_tls")

	// Switched to accept_proxy_protocol: the header reaches edgegate, which
	// serves the client it names.
	write(true, "")
	reload()
	passed := packets(t, srv, "pass_proxy_port")
	proxied := srv.count(":443", "pass", OutcomeProxied)
	raw := sendProxyHeader(t, n)
	if err := pqExchange(raw, p, false); err != nil {
		t.Fatalf("a PROXY header and a hello after the switch: %v", err)
	}
	waitMetric(t, srv, passed+1, "edgegate_bpf_packets_total", "verdict", "pass_proxy_port")
	srv.waitCount(t, ":443", "pass", OutcomeProxied, proxied+1)

	// Switched back: the exemption goes with it.
	write(false, "")
	reload()
	dropped = packets(t, srv, "drop_not_tls")
	sendProxyHeader(t, n)
	waitMetric(t, srv, dropped+1, "edgegate_bpf_packets_total", "verdict", "drop_not_tls")

	// allow_only: [cloudflare] with the built-in set: the client is not
	// Cloudflare's, so its SYN is dropped.
	write(false, "  allow_only: [cloudflare]\n")
	reload()
	notAllowed := packets(t, srv, "drop_not_allowed")
	if reaches(n, nsServer4) {
		t.Fatal("a source outside allow_only connected")
	}
	waitMetric(t, srv, notAllowed+1, "edgegate_bpf_packets_total", "verdict", "drop_not_allowed")

	// `edgegate cloudflare update` installs a set that holds the client's
	// range; a reload of the same file puts it in the kernel.
	ca, err := testpki.NewCA(cloudflare.CACommonName)
	if err != nil {
		t.Fatal(err)
	}
	installCloudflareSet(t, cfDir, "198.18.0.0/24\n"+testCloudflareList(9, false), "2001:2::/48\n"+testCloudflareList(4, true), ca.PEM)
	reload()
	if err := dialPQ(n, nsServer4, p, false); err != nil {
		t.Fatalf("a source in the installed Cloudflare set: %v", err)
	}
	if err := dialPQ(n, nsServer6, p, false); err != nil {
		t.Fatalf("a source in the installed Cloudflare set (IPv6): %v", err)
	}

	// never_block spares the client: offences past the threshold (3) do
	// not block it.
	write(false, "  allow_only: [cloudflare]\n  blocklist: {after: 3, within: 1m, for: 1m, never_block: [198.18.0.2]}\n")
	reload()
	for range 4 {
		refusedMTLS(t, n, nsServer4, p)
	}
	srv.waitCount(t, ":443", "app", OutcomeClientCert, 4)
	if b, _ := srv.guard.g.Blocked(nsClient4); b {
		t.Fatal("a never_block source was blocked")
	}
	if err := dialPQ(n, nsServer4, p, false); err != nil {
		t.Fatalf("a never_block source after 4 offences: %v", err)
	}

	// More allow_only prefixes than the kernel's table holds: the update
	// fails, the reload is refused and counted, and the guard keeps the
	// allow-list it had.
	var many strings.Builder
	many.WriteString("  allow_only: [cloudflare")
	for i := range 16400 {
		fmt.Fprintf(&many, ", 10.%d.%d.0/24", i/256, i%256)
	}
	many.WriteString("]\n")
	write(false, many.String())
	gen := srv.Generation()
	refused, _ := metric(t, srv, "edgegate_config_reload_total", "result", "error")
	if err := srv.ReloadFile(path); err == nil || !strings.Contains(err.Error(), "ebpf guard") {
		t.Fatalf("reload with an allow-list the kernel cannot hold: %v; want a refusal naming the guard", err)
	}
	if v, _ := metric(t, srv, "edgegate_config_reload_total", "result", "error"); v != refused+1 {
		t.Fatalf("failed reloads counted %v, want %v", v, refused+1)
	}
	if srv.Generation() != gen {
		t.Fatalf("generation %d after a refused reload, want %d", srv.Generation(), gen)
	}
	if err := dialPQ(n, nsServer4, p, false); err != nil {
		t.Fatalf("after a refused reload the allowed client is refused: %v", err)
	}
	if reachesFrom(t, n, netip.MustParseAddr("198.18.1.2")) {
		t.Fatal("after a refused reload a source outside the old allow-list connected")
	}
}

// sendProxyHeader connects from the client namespace and sends a PROXY v2
// header naming the client; it returns the connection.
func sendProxyHeader(t *testing.T, n *testNetns) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guardWait)
	defer cancel()
	c, err := n.dial(ctx, nsServer4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	hdr, err := proxyheader.Encode("v2", netip.AddrPortFrom(nsClient4, 40000), netip.AddrPortFrom(nsServer4, 443), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(hdr); err != nil {
		t.Fatal(err)
	}
	return c
}

// reaches reports whether a TCP connection from the client namespace to
// dst:443 completes within a second (a SYN the guard drops does not).
func reaches(n *testNetns, dst netip.Addr) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := n.dial(ctx, dst)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// reachesFrom is reaches from another source address in the client
// namespace, added for the call.
func reachesFrom(t *testing.T, n *testNetns, src netip.Addr) bool {
	t.Helper()
	if out, err := exec.Command("ip", "-n", n.client, "addr", "add", src.String()+"/15", "dev", nsClientVeth).CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := inNetns(n.client, func() (net.Conn, error) {
		return d.DialContext(ctx, "tcp", netip.AddrPortFrom(nsServer4, 443).String())
	})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestStartReleasesOnFailure: when Start fails after it has attached the
// guard (here the metrics address is taken), it leaves nothing behind: no
// program on the interface, no listener open, no descriptor held.
func TestStartReleasesOnFailure(t *testing.T) {
	needBPF(t)
	n := newTestNetns(t)
	held, err := inNetns(n.server, func() (net.Listener, error) { return net.Listen("tcp", "198.18.0.1:9100") })
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cfg := loadYAML(t, yamlf(`
listen: [{address: ":443"}]
metrics: {listen: "198.18.0.1:9100"}
ebpf: {enabled: true, interfaces: [%s], mode: xdp-generic, required: true, pin_path: %q}
vhosts: [{name: a, hosts: [a.example.test], mode: passthrough, upstream: {address: "127.0.0.1:1"}}]
`, nsServerVeth, testPinPath(t)))
	fds := fdCount(t)
	_, err = startInNetns(t, n.server, cfg, nil)
	if want := cfg.File + ":2: metrics.listen"; err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start with the metrics address taken: %v; want %q... address already in use", err, want)
	}
	out, err := exec.Command("ip", "-n", n.server, "-d", "link", "show", "dev", nsServerVeth).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	if strings.Contains(string(out), "xdp") {
		t.Fatalf("a program stays attached after the failed start:\n%s", out)
	}
	ln, err := inNetns(n.server, func() (net.Listener, error) { return net.Listen("tcp", ":443") })
	if err != nil {
		t.Fatalf("port 443 still held after the failed start: %v", err)
	}
	ln.Close()
	if got := fdCount(t); got > fds {
		t.Fatalf("%d descriptors after the failed start, %d before", got, fds)
	}
}
