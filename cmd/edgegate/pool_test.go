package main_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/edgegate/edgegate/gateway/eventually"
	"github.com/edgegate/edgegate/gateway/testpki"
)

// The test binary doubles as the upstream server process of the pool
// tests: run with these variables set, it serves instead of testing.
const (
	upstreamNameEnv = "EDGEGATE_TEST_UPSTREAM_NAME"
	upstreamAddrEnv = "EDGEGATE_TEST_UPSTREAM_ADDR"
	upstreamCertEnv = "EDGEGATE_TEST_UPSTREAM_CERT"
	upstreamKeyEnv  = "EDGEGATE_TEST_UPSTREAM_KEY"
)

func init() {
	if name := os.Getenv(upstreamNameEnv); name != "" {
		os.Exit(serveNamedUpstream(name))
	}
}

// serveNamedUpstream is the upstream process: on each connection it reads
// edgegate's PROXY header, terminates the client's TLS and answers the
// client's first line with its name. A connection that ends before a
// header (a health check) is just closed.
func serveNamedUpstream(name string) int {
	cert, err := tls.LoadX509KeyPair(os.Getenv(upstreamCertEnv), os.Getenv(upstreamKeyEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", os.Getenv(upstreamAddrEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}}
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(waitLimit))
			br := bufio.NewReader(c)
			if _, err := proxyproto.Read(br); err != nil {
				return
			}
			s := tls.Server(bufConn{c, br}, tc)
			if _, err := bufio.NewReader(s).ReadString('\n'); err != nil {
				return
			}
			s.Write([]byte(name + "\n"))
			s.Close()
		}()
	}
}

// upstreamProc is one upstream server process.
type upstreamProc struct {
	name, addr string
	cmd        *exec.Cmd
	exited     chan struct{}
}

// startUpstreamProc starts the upstream process name on addr and waits
// until it accepts connections; it is killed when the test ends.
func startUpstreamProc(t *testing.T, name, addr, certFile, keyFile string) *upstreamProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), upstreamNameEnv+"="+name, upstreamAddrEnv+"="+addr,
		upstreamCertEnv+"="+certFile, upstreamKeyEnv+"="+keyFile)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start upstream %s: %v", name, err)
	}
	p := &upstreamProc{name: name, addr: addr, cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.kill)
	eventually.Within(t, waitLimit, func() error {
		select {
		case <-p.exited:
			t.Fatalf("upstream %s exited at start", name)
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
	return p
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *upstreamProc) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// poolResult is one client connection of the load.
type poolResult struct {
	start  time.Time
	server string // the upstream that answered
	err    error
}

// askUpstream makes one connection through edgegate and returns the name
// of the upstream that answered.
func askUpstream(gw string, roots *x509.CertPool) (string, error) {
	e, err := dialEcho(gw, "www.e2e.test", roots)
	if err != nil {
		return "", err
	}
	defer e.conn.Close()
	return e.roundTrip("who")
}

// TestUpstreamPoolFailover runs the binary in front of three upstream
// processes under a steady load of client connections. One is killed
// (SIGKILL): once edgegate has noticed (its "upstream server down" log
// line) no client connection fails and none reaches it. It is restarted:
// edgegate marks it up and it gets traffic again. With all three killed,
// new clients are closed without a byte as upstream_unreachable.
func TestUpstreamPoolFailover(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := testpki.NewCA("edgegate pool test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Server("www.e2e.test")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := testpki.WritePEM(dir, "upstream", cert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	procs := map[string]*upstreamProc{}
	var servers []string
	for _, name := range []string{"a", "b", "c"} {
		addr := freeAddr(t)
		procs[name] = startUpstreamProc(t, name, addr, certFile, keyFile)
		servers = append(servers, fmt.Sprintf("{address: %q, weight: 1}", addr))
	}
	listen, metrics := freeAddr(t), freeAddr(t)
	p, _ := startGateway(t, yamlf(`
listen: [{address: %q}]
metrics: {listen: %q}
log: {format: json}
vhosts:
  - name: www
    hosts: ["www.e2e.test"]
    mode: passthrough
    upstream:
      servers: [%s]
      balance: round_robin
      health_check: {interval: 100ms, timeout: 100ms, fall: 2, rise: 2}
`, listen, metrics, strings.Join(servers, ", ")), true)

	// The load: three clients, each connecting again as soon as it is
	// answered, until stop.
	var mu sync.Mutex
	var results []poolResult
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := poolResult{start: time.Now()}
				r.server, r.err = askUpstream(listen, roots)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopLoad()
	// served counts the answers of each upstream to connections started
	// after since, and the failures among those connections.
	served := func(since time.Time) (map[string]int, []error) {
		mu.Lock()
		defer mu.Unlock()
		n := map[string]int{}
		var errs []error
		for _, r := range results {
			if r.start.Before(since) {
				continue
			}
			if r.err != nil {
				errs = append(errs, r.err)
				continue
			}
			n[r.server]++
		}
		return n, errs
	}
	waitServed := func(what string, since time.Time, enough func(map[string]int) bool) {
		t.Helper()
		eventually.Within(t, waitLimit, func() error {
			n, errs := served(since)
			if len(errs) > 0 {
				t.Fatalf("%d client connections failed after %s: first %v", len(errs), what, errs[0])
			}
			if !enough(n) {
				return fmt.Errorf("answers since %s: %v", what, n)
			}
			return nil
		})
	}

	begin := time.Now()
	waitServed("the start", begin, func(n map[string]int) bool { return n["a"] >= 5 && n["b"] >= 5 && n["c"] >= 5 })

	b := procs["b"]
	b.kill()
	downLine := func(state string) func(map[string]any) bool {
		return func(r map[string]any) bool { return r["msg"] == "upstream server "+state && r["server"] == b.addr }
	}
	p.stderr.waitJSON(t, "that b is down", downLine("down"))
	detected := time.Now()
	waitServed("b was detected down", detected, func(n map[string]int) bool {
		if n["b"] > 0 {
			t.Fatalf("%d connections reached b after it was detected down", n["b"])
		}
		return n["a"] >= 20 && n["c"] >= 20
	})
	_, page := httpGet(t, "http://"+metrics+"/metrics")
	if v, ok := metricValue(page, "edgegate_upstream_server_up", `vhost="www"`, `server="`+b.addr+`"`); !ok || v != 0 {
		t.Errorf("edgegate_upstream_server_up for b = %v (present %t) while it is down; want 0", v, ok)
	}

	procs["b"] = startUpstreamProc(t, "b", b.addr, certFile, keyFile)
	p.stderr.waitJSON(t, "that b is up again", downLine("up"))
	back := time.Now()
	waitServed("b came back", detected, func(n map[string]int) bool {
		m, _ := served(back)
		return m["b"] >= 5
	})
	stopLoad()
	_, page = httpGet(t, "http://"+metrics+"/metrics")
	for _, name := range []string{"a", "b", "c"} {
		addr := procs[name].addr
		if v, _ := metricValue(page, "edgegate_upstream_server_up", `server="`+addr+`"`); v != 1 {
			t.Errorf("edgegate_upstream_server_up for %s = %v at the end; want 1", name, v)
		}
		if v, _ := metricValue(page, "edgegate_upstream_connections_total", `server="`+addr+`"`); v < 5 {
			t.Errorf("edgegate_upstream_connections_total for %s = %v; want at least 5", name, v)
		}
	}
	t.Logf("%d connections in all; %d failed, all started before b was detected down", len(results), func() int {
		_, errs := served(begin)
		return len(errs)
	}())

	// No server up: new clients are closed without a byte and counted.
	downs := func(addr string) int {
		n := 0
		for _, r := range p.stderr.records(t) {
			if r["msg"] == "upstream server down" && r["server"] == addr {
				n++
			}
		}
		return n
	}
	wantDowns := map[string]int{"a": downs(procs["a"].addr) + 1, "b": downs(b.addr) + 1, "c": downs(procs["c"].addr) + 1}
	for _, proc := range procs {
		proc.kill()
	}
	eventually.Within(t, waitLimit, func() error {
		for name, want := range wantDowns {
			if got := downs(procs[name].addr); got < want {
				return fmt.Errorf("%s: %d down lines, want %d", name, got, want)
			}
		}
		return nil
	})
	raw, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	cc := &countingConn{Conn: raw}
	raw.SetDeadline(time.Now().Add(waitLimit))
	err = tls.Client(cc, &tls.Config{ServerName: "www.e2e.test", RootCAs: roots}).Handshake()
	raw.Close()
	if err == nil || cc.read > 0 {
		t.Fatalf("with no server up: handshake %v after %d bytes from edgegate; want a close without a byte", err, cc.read)
	}
	rec := p.stderr.waitJSON(t, "the unreachable connection", func(r map[string]any) bool {
		return r["msg"] == "connection" && r["outcome"] == "upstream_unreachable" && strings.Contains(fmt.Sprint(r["err"]), "no upstream server is up")
	})
	if rec["vhost"] != "www" {
		t.Errorf("unreachable connection logged for vhost %v; want www", rec["vhost"])
	}
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	read int
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read += n
	return n, err
}
