package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/edgegate/edgegate/gateway/proxyheader"
)

// An mtls vhost's TLS profile is the TLS 1.2 cipher suites and the key
// exchanges (curves) its handshake accepts: tls.cipher_suites and
// tls.curves. Unset, they are the widely used "intermediate" profile:
// TLS 1.3 with its three AEAD suites, and at TLS 1.2 only ECDHE with an
// AEAD (AES-GCM, ChaCha20-Poly1305), over X25519MLKEM768, X25519, P-256 or
// P-384. Cloudflare offers these suites to origins, so it loses nothing.
//
// crypto/tls ignores the order of both lists (it picks by its own
// preference: AES-GCM first when both sides have AES hardware) and does
// not let TLS 1.3 suites be configured, so a TLS 1.3 name in
// cipher_suites is refused rather than silently ignored.

// defaultCipherSuites is the intermediate profile at TLS 1.2, in
// crypto/tls's preference order.
var defaultCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// defaultCurves is the intermediate profile's key exchanges, the hybrid
// post-quantum one first (crypto/tls's order).
var defaultCurves = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384}

// curveNames are the accepted names of key exchanges: IANA's and
// OpenSSL's (prime256v1 is OpenSSL's P-256).
var curveNames = map[string]tls.CurveID{
	"X25519MLKEM768":     tls.X25519MLKEM768,
	"SecP256r1MLKEM768":  tls.SecP256r1MLKEM768,
	"SecP384r1MLKEM1024": tls.SecP384r1MLKEM1024,
	"X25519":             tls.X25519,
	"P-256":              tls.CurveP256,
	"prime256v1":         tls.CurveP256,
	"secp256r1":          tls.CurveP256,
	"P-384":              tls.CurveP384,
	"secp384r1":          tls.CurveP384,
	"P-521":              tls.CurveP521,
	"secp521r1":          tls.CurveP521,
}

// suites indexes every suite crypto/tls implements by its upper-case names:
// Go's (IANA's) and OpenSSL's (the names PROXY headers carry), so names copied from an nginx or HAProxy cipher list work.
var suites = func() map[string]*tls.CipherSuite {
	m := map[string]*tls.CipherSuite{}
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		m[s.Name] = s
		m[proxyheader.CipherSuiteName(s.ID)] = s
	}
	return m
}()

// tlsProfile is an mtls vhost's TLS profile, parsed.
type tlsProfile struct {
	cipherSuites []uint16
	curves       []tls.CurveID
}

// profileError is a refused tls.cipher_suites or tls.curves entry; index
// is the entry's position in the list, or -1 for the list as a whole.
type profileError struct {
	key   string
	index int
	msg   string
}

func (e *profileError) Error() string { return "tls." + e.key + ": " + e.msg }

// parseTLSProfile resolves t's cipher_suites and curves to crypto/tls IDs,
// the intermediate profile for a list left unset. Names match without
// regard to case. An unknown name, a TLS 1.3 suite, a name listed twice
// (under any of its names) or an empty list is a *profileError.
func parseTLSProfile(t *TLS) (tlsProfile, error) {
	p := tlsProfile{cipherSuites: slices.Clone(defaultCipherSuites), curves: slices.Clone(defaultCurves)}
	if t.CipherSuites != nil {
		p.cipherSuites = nil
		if len(t.CipherSuites) == 0 {
			return p, &profileError{"cipher_suites", -1, "empty; leave it out for the default"}
		}
		for j, name := range t.CipherSuites {
			s := suiteByName(name)
			switch {
			case s == nil:
				return p, &profileError{"cipher_suites", j, fmt.Sprintf("unknown cipher suite %q (want a TLS 1.2 suite crypto/tls implements, "+
					"by IANA name like TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 or OpenSSL name like ECDHE-ECDSA-AES128-GCM-SHA256)", name)}
			case !slices.Contains(s.SupportedVersions, tls.VersionTLS12):
				return p, &profileError{"cipher_suites", j, fmt.Sprintf("%s is a TLS 1.3 suite; crypto/tls does not let TLS 1.3 suites be "+
					"configured (it offers all three, each an AEAD), so list only TLS 1.2 suites", s.Name)}
			case slices.Contains(p.cipherSuites, s.ID):
				return p, &profileError{"cipher_suites", j, fmt.Sprintf("%q (%s) is listed twice", name, s.Name)}
			}
			p.cipherSuites = append(p.cipherSuites, s.ID)
		}
	}
	if t.Curves != nil {
		p.curves = nil
		if len(t.Curves) == 0 {
			return p, &profileError{"curves", -1, "empty; leave it out for the default"}
		}
		for j, name := range t.Curves {
			id, ok := curveByName(name)
			switch {
			case !ok:
				return p, &profileError{"curves", j, fmt.Sprintf("unknown curve %q (want X25519MLKEM768, SecP256r1MLKEM768, "+
					"SecP384r1MLKEM1024, X25519, P-256, P-384 or P-521)", name)}
			case slices.Contains(p.curves, id):
				return p, &profileError{"curves", j, fmt.Sprintf("%q (%v) is listed twice", name, id)}
			}
			p.curves = append(p.curves, id)
		}
	}
	return p, nil
}

func suiteByName(name string) *tls.CipherSuite {
	return suites[strings.ToUpper(name)]
}

func curveByName(name string) (tls.CurveID, bool) {
	for n, id := range curveNames {
		if strings.EqualFold(n, name) {
			return id, true
		}
	}
	return 0, false
}

// validateTLSProfile checks vhost i's tls.cipher_suites and tls.curves,
// reporting a refused entry at its own line, and fills TLS.SuiteIDs and
// TLS.CurveIDs.
func (c *Config) validateTLSProfile(i int, v *VHost) error {
	p, err := parseTLSProfile(v.TLS)
	var pe *profileError
	if !errors.As(err, &pe) {
		v.TLS.SuiteIDs, v.TLS.CurveIDs = p.cipherSuites, p.curves
		return err
	}
	path := []any{"vhosts", i, "tls", pe.key}
	if pe.index >= 0 {
		path = append(path, pe.index)
	}
	return c.ErrAt(fmt.Sprintf("vhost %q: %v", v.Name, pe), path...)
}

// suiteWeakness says why a TLS 1.2 suite falls short of the intermediate
// profile (ECDHE key exchange and an AEAD), or "" when it does not.
func suiteWeakness(s *tls.CipherSuite) string {
	var why []string
	switch {
	case strings.Contains(s.Name, "_RC4_"):
		why = append(why, "RC4 is broken and prohibited by RFC 7465")
	case strings.Contains(s.Name, "_3DES_"):
		why = append(why, "3DES has 64-bit blocks (SWEET32)")
	case strings.Contains(s.Name, "_CBC_"):
		why = append(why, "CBC with MAC-then-encrypt invites padding oracles (LUCKY13)")
	}
	if !strings.HasPrefix(s.Name, "TLS_ECDHE_") {
		why = append(why, "RSA key exchange has no forward secrecy (ROBOT)")
	}
	return strings.Join(why, "; ")
}

// TLSWarnings lists what is valid but unwise in an mtls vhost's TLS
// profile: weak suites, suites that cannot apply, and curves that leave
// TLS 1.2 without ECDHE. It assumes a validated configuration.
func TLSWarnings(v VHost) []string {
	var ws []string
	for _, name := range v.TLS.CipherSuites {
		if s := suiteByName(name); s != nil {
			if why := suiteWeakness(s); why != "" {
				ws = append(ws, fmt.Sprintf("vhost %q: tls.cipher_suites: %s is weak: %s", v.Name, s.Name, why))
			}
		}
	}
	if len(v.TLS.CipherSuites) > 0 && v.TLS.MinVersion == "1.3" {
		ws = append(ws, fmt.Sprintf("vhost %q: tls.cipher_suites has no effect with min_version \"1.3\" (TLS 1.3 suites are not configurable)", v.Name))
	}
	if len(v.TLS.Curves) > 0 && v.TLS.MinVersion != "1.3" {
		classic := false
		for _, name := range v.TLS.Curves {
			if id, ok := curveByName(name); ok && !isHybridCurve(id) {
				classic = true
			}
		}
		if !classic {
			ws = append(ws, fmt.Sprintf("vhost %q: tls.curves lists only post-quantum hybrids, which TLS 1.2 cannot use: "+
				"TLS 1.2 clients get no ECDHE suite; add X25519 or P-256, or set min_version \"1.3\"", v.Name))
		}
	}
	return ws
}

func isHybridCurve(id tls.CurveID) bool {
	return id == tls.X25519MLKEM768 || id == tls.SecP256r1MLKEM768 || id == tls.SecP384r1MLKEM1024
}
