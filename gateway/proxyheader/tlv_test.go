package proxyheader

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/edgegate/edgegate/gateway/cloudflare"
	"github.com/edgegate/edgegate/gateway/testpki"
)

// ioTimeout bounds every blocking step of these tests; it only matters when
// something is broken, so it is generous for a loaded CI machine.
const ioTimeout = 30 * time.Second

// serverState runs one real TLS handshake over loopback and returns the
// server's view of it, as edgegate would see it after terminating.
func serverState(t testing.TB, srv, cli *tls.Config) tls.ConnectionState {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		st  tls.ConnectionState
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(ioTimeout))
		tc := tls.Server(c, srv)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		// Echo one byte so the client reads the session ticket that
		// TLS 1.3 sends after the handshake, for the resumption case.
		b := make([]byte, 1)
		if _, err := io.ReadFull(tc, b); err != nil {
			done <- result{err: err}
			return
		}
		if _, err := tc.Write(b); err != nil {
			done <- result{err: err}
			return
		}
		done <- result{st: tc.ConnectionState()}
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", ln.Addr().String(), cli)
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	return r.st
}

// roundTrip formats tlvs into a PROXY v2 header as the upstream would
// receive it and parses it back with go-proxyproto, as a reader would.
func roundTrip(t *testing.T, tlvs []proxyproto.TLV) []proxyproto.TLV {
	t.Helper()
	src := &net.TCPAddr{IP: net.ParseIP("198.18.0.7"), Port: 40000}
	dst := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 443}
	h := proxyproto.HeaderProxyFromAddrs(2, src, dst)
	if err := h.SetTLVs(tlvs); err != nil {
		t.Fatalf("SetTLVs: %v", err)
	}
	raw, err := h.Format()
	if err != nil {
		t.Fatalf("Format: %v", err)
	}
	back, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if s, d, ok := back.TCPAddrs(); !ok || s.String() != src.String() || d.String() != dst.String() {
		t.Fatalf("addresses came back as %v -> %v", s, d)
	}
	got, err := back.TLVs()
	if err != nil {
		t.Fatalf("TLVs: %v", err)
	}
	return got
}

// facts is what an upstream can read from the TLVs.
type facts struct {
	alpn, authority, uniqueID         string
	hasSSL                            bool
	client                            uint8
	verify                            uint32
	version, cipher, cn, sig, key     string
	hasVersion, hasCN, hasSig, hasKey bool
}

func readFacts(t *testing.T, tlvs []proxyproto.TLV) facts {
	t.Helper()
	var f facts
	for _, tlv := range tlvs {
		switch tlv.Type {
		case proxyproto.PP2_TYPE_ALPN:
			f.alpn = string(tlv.Value)
		case proxyproto.PP2_TYPE_AUTHORITY:
			f.authority = string(tlv.Value)
		case proxyproto.PP2_TYPE_UNIQUE_ID:
			f.uniqueID = string(tlv.Value)
		}
	}
	ssl, ok := tlvparse.FindSSL(tlvs)
	if !ok {
		return f
	}
	f.hasSSL = true
	f.client, f.verify = ssl.Client, ssl.Verify
	f.version, f.hasVersion = ssl.SSLVersion()
	f.cipher, _ = ssl.SSLCipher()
	f.cn, f.hasCN = ssl.ClientCN()
	f.sig, f.hasSig = ssl.SSLSigAlg()
	f.key, f.hasKey = ssl.SSLKeyAlg()
	return f
}

type tlvPKI struct {
	caPEM            []byte
	pool             *x509.CertPool
	ecServer, rsaSrv tls.Certificate
	ecClient, rsaCli tls.Certificate
}

func newTLVPKI(t testing.TB) *tlvPKI {
	t.Helper()
	ca, err := testpki.NewCA("tlv test CA")
	if err != nil {
		t.Fatal(err)
	}
	p := tlvPKI{caPEM: ca.PEM}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca.Cert)
	for _, step := range []struct {
		dst *tls.Certificate
		f   func() (tls.Certificate, error)
	}{
		{&p.ecServer, func() (tls.Certificate, error) { return ca.Server("app.example.com") }},
		{&p.rsaSrv, func() (tls.Certificate, error) { return ca.ServerRSA("app.example.com") }},
		{&p.ecClient, func() (tls.Certificate, error) { return ca.Client("cloudflare-ec") }},
		{&p.rsaCli, func() (tls.Certificate, error) { return ca.Client("cloudflare-rsa", testpki.RSAKey(2048)) }},
	} {
		c, err := step.f()
		if err != nil {
			t.Fatal(err)
		}
		*step.dst = c
	}
	return &p
}

func TestTLSTLVsFromHandshake(t *testing.T) {
	p := newTLVPKI(t)
	flagsCert := tlvparse.PP2_BITFIELD_CLIENT_SSL | tlvparse.PP2_BITFIELD_CLIENT_CERT_CONN | tlvparse.PP2_BITFIELD_CLIENT_CERT_SESS
	tests := []struct {
		name    string
		server  tls.Certificate
		client  []tls.Certificate
		version uint16
		suites  []uint16
		alpn    []string
		want    facts
	}{
		{
			name: "TLS 1.3 ECDSA", server: p.ecServer, client: []tls.Certificate{p.ecClient},
			version: tls.VersionTLS13, alpn: []string{"h2", "http/1.1"},
			want: facts{alpn: "http/1.1", authority: "app.example.com", client: flagsCert, verify: 0,
				version: "TLSv1.3", cn: "cloudflare-ec", sig: "ecdsa-with-SHA256", key: "EC256"},
		},
		{
			name: "TLS 1.2 ECDSA AES128-GCM", server: p.ecServer, client: []tls.Certificate{p.rsaCli},
			version: tls.VersionTLS12, suites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			want: facts{authority: "app.example.com", client: flagsCert, verify: 0,
				version: "TLSv1.2", cipher: "ECDHE-ECDSA-AES128-GCM-SHA256", cn: "cloudflare-rsa", sig: "ecdsa-with-SHA256", key: "EC256"},
		},
		{
			name: "TLS 1.2 RSA CHACHA20", server: p.rsaSrv, client: []tls.Certificate{p.ecClient},
			version: tls.VersionTLS12, suites: []uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}, alpn: []string{"http/1.1"},
			want: facts{alpn: "http/1.1", authority: "app.example.com", client: flagsCert, verify: 0,
				version: "TLSv1.2", cipher: "ECDHE-RSA-CHACHA20-POLY1305", cn: "cloudflare-ec", sig: "ecdsa-with-SHA256", key: "RSA2048"},
		},
		{
			name: "TLS 1.3 no client certificate", server: p.ecServer,
			version: tls.VersionTLS13,
			want: facts{authority: "app.example.com", client: tlvparse.PP2_BITFIELD_CLIENT_SSL, verify: 1,
				version: "TLSv1.3", sig: "ecdsa-with-SHA256", key: "EC256"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := &tls.Config{
				Certificates: []tls.Certificate{tc.server},
				ClientAuth:   tls.RequestClientCert,
				NextProtos:   []string{"http/1.1"},
				MinVersion:   tc.version,
				MaxVersion:   tc.version,
			}
			cli := &tls.Config{
				ServerName:   "app.example.com",
				RootCAs:      p.pool,
				Certificates: tc.client,
				NextProtos:   tc.alpn,
				MinVersion:   tc.version,
				MaxVersion:   tc.version,
				CipherSuites: tc.suites,
			}
			st := serverState(t, srv, cli)
			tlvs, err := TLSTLVs("app.example.com", st, tc.server.Leaf, []byte("conn-42"))
			if err != nil {
				t.Fatal(err)
			}
			got := readFacts(t, roundTrip(t, tlvs))
			want := tc.want
			want.uniqueID = "conn-42"
			want.hasSSL, want.hasVersion, want.hasSig, want.hasKey = true, true, true, true
			want.hasCN = want.cn != ""
			if want.cipher == "" {
				// TLS 1.3 picks by hardware; the name must still be OpenSSL's.
				want.cipher = openSSLCipherNames[st.CipherSuite]
				if !strings.HasPrefix(want.cipher, "TLS_") {
					t.Fatalf("TLS 1.3 suite %s has no TLS_ name", tls.CipherSuiteName(st.CipherSuite))
				}
			}
			if got != want {
				t.Fatalf("upstream reads\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestTLSTLVsResumed(t *testing.T) {
	p := newTLVPKI(t)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tlsVersionName(v), func(t *testing.T) {
			srv := &tls.Config{Certificates: []tls.Certificate{p.ecServer}, ClientAuth: tls.RequireAnyClientCert, MaxVersion: v}
			cli := &tls.Config{
				ServerName: "app.example.com", RootCAs: p.pool, Certificates: []tls.Certificate{p.ecClient},
				MaxVersion: v, ClientSessionCache: tls.NewLRUClientSessionCache(4),
			}
			first := serverState(t, srv, cli)
			if first.DidResume {
				t.Fatal("first connection resumed")
			}
			second := serverState(t, srv, cli)
			if !second.DidResume {
				t.Fatal("second connection did not resume; cannot test CERT_SESS without CERT_CONN")
			}
			tlvs, err := TLSTLVs("app.example.com", second, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			f := readFacts(t, roundTrip(t, tlvs))
			if want := tlvparse.PP2_BITFIELD_CLIENT_SSL | tlvparse.PP2_BITFIELD_CLIENT_CERT_SESS; f.client != want {
				t.Fatalf("client flags %#x, want %#x (certificate in session, not on this connection)", f.client, want)
			}
			if f.cn != "cloudflare-ec" || f.verify != 0 {
				t.Fatalf("resumed connection lost its client identity: cn %q verify %d", f.cn, f.verify)
			}
			if f.hasSig || f.hasKey {
				t.Fatal("SIG_ALG/KEY_ALG sent without a certificate to describe")
			}
		})
	}
}

func TestTLSTLVsEdges(t *testing.T) {
	st := tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256, HandshakeComplete: true}
	tlvs, err := TLSTLVs("", st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := readFacts(t, roundTrip(t, tlvs))
	if f.authority != "" || f.alpn != "" || f.uniqueID != "" {
		t.Fatalf("empty inputs produced TLVs: %+v", f)
	}
	if !f.hasSSL || f.version != "TLSv1.3" {
		t.Fatalf("SSL TLV missing or wrong: %+v", f)
	}
	if _, err := TLSTLVs("a", st, nil, bytes.Repeat([]byte{1}, maxUniqueIDLen+1)); err == nil {
		t.Fatal("accepted a unique id over 128 bytes")
	}
	if _, err := TLSTLVs("a", st, nil, bytes.Repeat([]byte{1}, maxUniqueIDLen)); err != nil {
		t.Fatalf("refused a 128-byte unique id: %v", err)
	}
	// A client certificate without a CN must not produce an empty CN TLV,
	// which readers reject as malformed (losing the whole SSL TLV).
	st.PeerCertificates = []*x509.Certificate{{}}
	tlvs, err = TLSTLVs("a", st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f = readFacts(t, roundTrip(t, tlvs))
	if !f.hasSSL || f.hasCN || f.verify != 0 {
		t.Fatalf("CN-less certificate: %+v", f)
	}
}

func TestPassthroughTLVs(t *testing.T) {
	f := readFacts(t, roundTrip(t, PassthroughTLVs("App.Example.com.", nil)))
	if f.authority != "App.Example.com." || f.hasSSL || f.alpn != "" {
		t.Fatalf("passthrough TLVs: %+v", f)
	}
	if got := PassthroughTLVs("", nil); got != nil {
		t.Fatalf("no SNI gave %v", got)
	}
}

func TestCipherSuiteNames(t *testing.T) {
	all := append(tls.CipherSuites(), tls.InsecureCipherSuites()...)
	for _, s := range all {
		if _, ok := openSSLCipherNames[s.ID]; !ok {
			t.Errorf("no OpenSSL name for %s", s.Name)
		}
	}
	// Cross-check against the OpenSSL on this machine where it has the suite.
	out, err := exec.Command("openssl", "ciphers", "-stdname", "ALL:@SECLEVEL=0").Output()
	if err != nil {
		skipOrFail(t, "openssl ciphers: %v", err)
		return
	}
	ossl := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line) // IANA - OpenSSL version ...
		if len(fields) >= 3 && fields[1] == "-" {
			ossl[fields[0]] = fields[2]
		}
	}
	checked := 0
	for _, s := range all {
		want, ok := ossl[s.Name]
		if !ok {
			continue // e.g. RC4 and 3DES, compiled out of modern OpenSSL
		}
		checked++
		if got := openSSLCipherNames[s.ID]; got != want {
			t.Errorf("%s: our name %q, OpenSSL's %q", s.Name, got, want)
		}
	}
	if checked < 15 {
		t.Fatalf("only %d suites cross-checked against OpenSSL", checked)
	}
}

func TestCertAlgNames(t *testing.T) {
	for alg, want := range map[x509.SignatureAlgorithm]string{
		x509.SHA256WithRSA:             "RSA-SHA256",
		x509.SHA512WithRSA:             "RSA-SHA512",
		x509.SHA256WithRSAPSS:          "RSASSA-PSS",
		x509.ECDSAWithSHA384:           "ecdsa-with-SHA384",
		x509.PureEd25519:               "ED25519",
		x509.UnknownSignatureAlgorithm: "UNKNOWN",
	} {
		if got := certSigAlgName(&x509.Certificate{SignatureAlgorithm: alg}); got != want {
			t.Errorf("%v: %q, want %q", alg, got, want)
		}
	}
	// The embedded Cloudflare CA is RSA 4096 signed with SHA-512.
	cf := cloudflare.Builtin().CA
	if got := certSigAlgName(cf) + " " + certKeyAlgName(cf); got != "RSA-SHA512 RSA4096" {
		t.Errorf("Cloudflare CA: %q", got)
	}
}

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// TestTLSTLVsMatchHAProxy terminates the same kind of client at a real
// HAProxy, configured to send every TLS TLV it knows, and at crypto/tls, and
// checks that the upstream reads the same facts from both.
func TestTLSTLVsMatchHAProxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		skipOrFail(t, "haproxy not installed: %v", err)
		return
	}
	p := newTLVPKI(t)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, p.caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		server  tls.Certificate
		version uint16
		suite   uint16
	}{
		{"TLS 1.3 ECDSA", p.ecServer, tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256},
		{"TLS 1.2 ECDSA", p.ecServer, tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
		// An RSA server certificate with an ECDSA client certificate shows
		// which one HAProxy's KEY_ALG describes: the one it served.
		{"TLS 1.2 RSA", p.rsaSrv, tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			crt, key, err := testpki.WritePEM(dir, "server", tc.server)
			if err != nil {
				t.Fatal(err)
			}
			bundle := filepath.Join(dir, "server.pem")
			if err := os.WriteFile(bundle, append(mustRead(t, crt), mustRead(t, key)...), 0o600); err != nil {
				t.Fatal(err)
			}
			cli := func() *tls.Config {
				c := &tls.Config{
					ServerName: "app.example.com", RootCAs: p.pool, Certificates: []tls.Certificate{p.ecClient},
					NextProtos: []string{"http/1.1"}, MinVersion: tc.version, MaxVersion: tc.version,
				}
				if tc.version == tls.VersionTLS12 {
					c.CipherSuites = []uint16{tc.suite}
				}
				return c
			}
			// HAProxy's view.
			hf := haproxyFacts(t, bin, dir, bundle, caFile, cli())
			// edgegate's view of the same client.
			st := serverState(t, &tls.Config{
				Certificates: []tls.Certificate{tc.server}, ClientAuth: tls.RequireAnyClientCert,
				NextProtos: []string{"http/1.1"}, MinVersion: tc.version, MaxVersion: tc.version,
			}, cli())
			tlvs, err := TLSTLVs("app.example.com", st, tc.server.Leaf, nil)
			if err != nil {
				t.Fatal(err)
			}
			ef := readFacts(t, roundTrip(t, tlvs))
			t.Logf("HAProxy and edgegate: %+v", hf)
			if hf != ef {
				t.Fatalf("HAProxy sends\n%+v\nedgegate sends\n%+v", hf, ef)
			}
		})
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// haproxyFacts runs HAProxy terminating TLS on a listener this test opened
// (passed as fd 3, so there is no port race and no wait for it to bind),
// connects a client with cli, and returns what HAProxy's PROXY v2 header
// tells the upstream.
func haproxyFacts(t *testing.T, bin, dir, bundle, caFile string, cli *tls.Config) facts {
	t.Helper()
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	frontAddr := front.Addr().String()
	frontFile, err := front.(*net.TCPListener).File()
	front.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer frontFile.Close()

	cfg := fmt.Sprintf(`global
	nbthread 1
defaults
	mode tcp
	timeout connect 30s
	timeout client 30s
	timeout server 30s
frontend fe
	bind fd@3 ssl crt %s ca-file %s verify required alpn http/1.1 ciphersuites TLS_AES_128_GCM_SHA256
	default_backend be
backend be
	server up %s send-proxy-v2 proxy-v2-options ssl,cert-cn,ssl-cipher,cert-sig,cert-key,authority
`, bundle, caFile, up.Addr())
	cfgFile := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "-db", "-f", cfgFile)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.ExtraFiles = []*os.File{frontFile}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	type result struct {
		h   *proxyproto.Header
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := up.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(ioTimeout))
		h, err := proxyproto.Read(bufio.NewReader(c))
		got <- result{h: h, err: err}
	}()

	c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", frontAddr, cli)
	if err != nil {
		t.Fatalf("handshake with haproxy: %v\nhaproxy output:\n%s", err, out.String())
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	// The first byte also delivers the client certificate in TLS 1.3.
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-got:
	case err := <-exited:
		t.Fatalf("haproxy exited: %v\n%s", err, out.String())
	case <-time.After(ioTimeout):
		t.Fatalf("no connection from haproxy\n%s", out.String())
	}
	if r.err != nil {
		t.Fatalf("read haproxy's PROXY header: %v", r.err)
	}
	tlvs, err := r.h.TLVs()
	if err != nil {
		t.Fatal(err)
	}
	return readFacts(t, tlvs)
}
