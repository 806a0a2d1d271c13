package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/config"
	"github.com/edgegate/edgegate/gateway/testpki"
)

// demoConfig is the embedded demo configuration; %s are filled with the
// listen address, the upstreams and the throwaway PKI's files.
const demoConfig = `# edgegate demo configuration (generated)
listen:
  - address: %q
unmatched: close
log: {level: info, format: text}
vhosts:
  - name: www
    hosts: ["www.demo.test"]
    mode: passthrough
    upstream: {address: %q, proxy_protocol: v2}
  - name: app
    hosts: ["app.demo.test"]
    mode: mtls
    tls:
      certificates: [{cert: app.crt, key: app.key}]
    client_auth:
      ca: origin-pull-ca.crt
    upstream: {address: %q, proxy_protocol: v2}
`

// demo is a running demo: gateway, upstreams and the files clients need.
type demo struct {
	dir      string
	addr     string // gateway address
	srv      *gateway.Server
	ups      []net.Listener
	caFile   string
	certFile string
	keyFile  string
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", stderr)
	listen := fs.String("listen", "127.0.0.1:8443", "gateway address")
	selfCheck := fs.Bool("check", false, "make the demo requests with Go's client, print the results and exit")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Caught before the instructions are printed: whoever reads them may
	// press Ctrl-C at once, and the demo must still clean up its files.
	sigs := make(chan os.Signal, 1)
	if !*selfCheck {
		notifyStop(sigs)
	}
	d, err := startDemo(*listen, log)
	if err != nil {
		fmt.Fprintln(stderr, "edgegate demo:", err)
		return 1
	}
	defer d.close()
	if *selfCheck {
		return d.check(stdout)
	}
	d.printInstructions(stdout)
	<-sigs
	return 0
}

func startDemo(listen string, log *slog.Logger) (d *demo, err error) {
	dir, err := os.MkdirTemp("", "edgegate-demo-")
	if err != nil {
		return nil, err
	}
	d = &demo{dir: dir}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	ca, err := testpki.NewCA("edgegate demo origin-pull CA (stands in for Cloudflare's)")
	if err != nil {
		return nil, err
	}
	d.caFile = filepath.Join(dir, "origin-pull-ca.crt")
	if err := os.WriteFile(d.caFile, ca.PEM, 0o644); err != nil {
		return nil, err
	}
	for _, leaf := range []struct {
		name string
		mk   func() (tls.Certificate, error)
	}{
		{"app", func() (tls.Certificate, error) { return ca.Server("app.demo.test") }},
		{"www", func() (tls.Certificate, error) { return ca.Server("www.demo.test") }},
		{"client", func() (tls.Certificate, error) { return ca.Client("demo origin-pull client") }},
	} {
		c, err := leaf.mk()
		if err != nil {
			return nil, err
		}
		cf, kf, err := testpki.WritePEM(dir, leaf.name, c)
		if err != nil {
			return nil, err
		}
		if leaf.name == "client" {
			d.certFile, d.keyFile = cf, kf
		}
	}

	wwwCert, err := tls.LoadX509KeyPair(filepath.Join(dir, "www.crt"), filepath.Join(dir, "www.key"))
	if err != nil {
		return nil, err
	}
	// The passthrough upstream terminates TLS itself.
	wwwUp, err := d.upstream(&tls.Config{Certificates: []tls.Certificate{wwwCert}}, "www: passthrough upstream (it terminated TLS itself)")
	if err != nil {
		return nil, err
	}
	// The mtls upstream gets cleartext and the TLS facts in the PROXY header.
	appUp, err := d.upstream(nil, "app: mtls upstream (edgegate verified your client certificate)")
	if err != nil {
		return nil, err
	}

	cfgFile := filepath.Join(dir, "edgegate.yaml")
	text := fmt.Sprintf(demoConfig, listen, wwwUp, appUp)
	if err := os.WriteFile(cfgFile, []byte(text), 0o644); err != nil {
		return nil, err
	}
	cfg, err := config.Load(cfgFile, nil)
	if err != nil {
		return nil, err
	}
	if d.srv, err = gateway.NewServer(cfg, log); err != nil {
		return nil, err
	}
	if err := d.srv.Start(); err != nil {
		d.srv = nil
		return nil, err
	}
	d.addr = d.srv.Addrs()[listen].String()
	return d, nil
}

// upstream starts a demo upstream that reads edgegate's PROXY header and
// answers each HTTP request with who it thinks the client is.
func (d *demo) upstream(tc *tls.Config, who string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	d.ups = append(d.ups, ln)
	var pl net.Listener = &proxyproto.Listener{Listener: ln, ReadHeaderTimeout: 5 * time.Second}
	if tc != nil {
		pl = tls.NewListener(pl, tc)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s\nclient address (from the PROXY header): %s\n", who, r.RemoteAddr)
			if pc, ok := r.Context().Value(connKey{}).(*proxyproto.Conn); ok {
				if tlvs, err := pc.ProxyHeader().TLVs(); err == nil {
					if ssl, ok := tlvparse.FindSSL(tlvs); ok {
						v, _ := ssl.SSLVersion()
						cn, _ := ssl.ClientCN()
						fmt.Fprintf(w, "TLS from edgegate: %s, client certificate CN %q\n", v, cn)
					}
				}
			}
		}),
	}
	go srv.Serve(pl)
	return ln.Addr().String(), nil
}

type connKey struct{}

// close stops the demo. Connections get a moment to finish: the last
// request has just been answered, and cutting its connection would log it
// as closed_shutdown (with a drain-timeout warning) instead of proxied.
func (d *demo) close() {
	if d.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		d.srv.Shutdown(ctx)
		cancel()
	}
	for _, ln := range d.ups {
		ln.Close()
	}
	os.RemoveAll(d.dir)
}

func (d *demo) printInstructions(w io.Writer) {
	host, port, _ := net.SplitHostPort(d.addr)
	res := func(name string) string { return fmt.Sprintf("--resolve %s:%s:%s", name, port, host) }
	fmt.Fprintf(w, `edgegate demo is listening on %s (files in %s)

Passthrough: the upstream terminates TLS, edgegate only routed by SNI:
  curl --cacert %s %s https://www.demo.test:%s/

mtls: edgegate terminates TLS and requires a client certificate:
  curl --cacert %s --cert %s --key %s %s https://app.demo.test:%s/

mtls without a client certificate: edgegate's side of the TLS handshake, then
a close with no TLS alert and no HTTP response:
  curl --cacert %s %s https://app.demo.test:%s/

Not TLS, or an unknown name: closed without a byte:
  curl -v http://%s/
  curl -k %s https://unknown.demo.test:%s/

Press Ctrl-C to stop.
`, d.addr, d.dir,
		d.caFile, res("www.demo.test"), port,
		d.caFile, d.certFile, d.keyFile, res("app.demo.test"), port,
		d.caFile, res("app.demo.test"), port,
		d.addr,
		res("unknown.demo.test"), port)
}

// check makes the demo's requests with Go's client and reports each result;
// it exits non-zero if any path does not behave as the instructions say.
func (d *demo) check(w io.Writer) int {
	caPEM, err := os.ReadFile(d.caFile)
	if err != nil {
		fmt.Fprintln(w, err)
		return 1
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client, err := tls.LoadX509KeyPair(d.certFile, d.keyFile)
	if err != nil {
		fmt.Fprintln(w, err)
		return 1
	}
	get := func(name string, certs []tls.Certificate) (string, error) {
		tr := &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: name, Certificates: certs},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, d.addr)
			},
		}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		resp, err := c.Get("https://" + name + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	failed := 0
	expect := func(label string, body string, err error, wantOK bool) {
		switch {
		case wantOK && err == nil:
			fmt.Fprintf(w, "ok   %s:\n%s", label, indent(body))
		case !wantOK && err != nil && body == "":
			fmt.Fprintf(w, "ok   %s: refused (%v)\n", label, err)
		default:
			failed++
			fmt.Fprintf(w, "FAIL %s: body %q, err %v\n", label, body, err)
		}
	}
	body, err := get("www.demo.test", nil)
	expect("passthrough www.demo.test", body, err, true)
	body, err = get("app.demo.test", []tls.Certificate{client})
	expect("mtls app.demo.test with the demo client certificate", body, err, true)
	body, err = get("app.demo.test", nil)
	expect("mtls app.demo.test without a client certificate", body, err, false)
	if failed > 0 {
		return 1
	}
	return 0
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("       " + l + "\n")
	}
	return b.String()
}
