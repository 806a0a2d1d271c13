// Package proxyheader encodes the PROXY protocol header (v1, v2) that
// edgegate sends an upstream before the client's bytes, and the v2 TLVs
// that carry what edgegate learnt: the SNI, the unique ID and, for
// terminated connections, the TLS facts spelled as HAProxy spells them.
package proxyheader

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
)

// maxUniqueIDLen is the PROXY protocol's limit for PP2_TYPE_UNIQUE_ID.
const maxUniqueIDLen = 128

// TLSTLVs returns the PROXY v2 TLVs that tell the upstream what edgegate
// learnt terminating a connection, spelled as HAProxy spells them so that
// nginx and HAProxy configurations written for HAProxy work unchanged:
//
//   - PP2_TYPE_ALPN: the negotiated protocol, if any;
//   - PP2_TYPE_AUTHORITY: sni, the server name as the client sent it, if any;
//   - PP2_TYPE_SSL: client flags PP2_CLIENT_SSL, plus PP2_CLIENT_CERT_SESS when
//     the session carries a client certificate and PP2_CLIENT_CERT_CONN when it
//     was presented on this connection (not resumed); verify is 0 when a client
//     certificate is present (the caller sends TLS facts only for chains that
//     passed clientauth.Verifier.Verify) and 1 otherwise. Sub-TLVs: SSL_VERSION
//     ("TLSv1.3"), SSL_CIPHER (OpenSSL name, "ECDHE-ECDSA-AES128-GCM-SHA256"),
//     SSL_CN (client leaf's subject CN, when non-empty), and SSL_SIG_ALG and
//     SSL_KEY_ALG of cert ("ecdsa-with-SHA256", "EC256") when cert is not nil;
//   - PP2_TYPE_UNIQUE_ID: uniqueID, when not empty (at most 128 bytes).
//
// The PROXY protocol specification and HAProxy fill SSL_SIG_ALG and
// SSL_KEY_ALG from the certificate the frontend presented, that is the
// server certificate edgegate served; pass that as cert to match them. They
// describe a single certificate, so the caller decides which one.
func TLSTLVs(sni string, st tls.ConnectionState, cert *x509.Certificate, uniqueID []byte) ([]proxyproto.TLV, error) {
	if len(uniqueID) > maxUniqueIDLen {
		return nil, fmt.Errorf("proxy TLV unique id: %d bytes, limit %d", len(uniqueID), maxUniqueIDLen)
	}
	tlvs := make([]proxyproto.TLV, 0, 4)
	if st.NegotiatedProtocol != "" {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_ALPN, Value: []byte(st.NegotiatedProtocol)})
	}
	if sni != "" {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(sni)})
	}

	// PP2_TYPE_SSL as tlvparse.PP2SSL.Marshal lays it out (client flags,
	// verify, then the sub-TLVs), in one slice.
	client, verify := byte(tlvparse.PP2_BITFIELD_CLIENT_SSL), uint32(1)
	var cn string
	if len(st.PeerCertificates) > 0 {
		client |= tlvparse.PP2_BITFIELD_CLIENT_CERT_SESS
		if !st.DidResume {
			client |= tlvparse.PP2_BITFIELD_CLIENT_CERT_CONN
		}
		verify = 0
		// An empty or non-UTF-8 CN is left out: the specification wants a
		// UTF-8 string, and readers reject an empty one as malformed.
		if c := st.PeerCertificates[0].Subject.CommonName; utf8.ValidString(c) {
			cn = c
		}
	}
	ssl := make([]byte, 5, 128)
	ssl[0] = client
	binary.BigEndian.PutUint32(ssl[1:], verify)
	ssl = appendSubTLV(ssl, proxyproto.PP2_SUBTYPE_SSL_VERSION, tlsVersionName(st.Version))
	ssl = appendSubTLV(ssl, proxyproto.PP2_SUBTYPE_SSL_CIPHER, CipherSuiteName(st.CipherSuite))
	if cn != "" {
		ssl = appendSubTLV(ssl, proxyproto.PP2_SUBTYPE_SSL_CN, cn)
	}
	if cert != nil {
		ssl = appendSubTLV(ssl, proxyproto.PP2_SUBTYPE_SSL_SIG_ALG, certSigAlgName(cert))
		ssl = appendSubTLV(ssl, proxyproto.PP2_SUBTYPE_SSL_KEY_ALG, certKeyAlgName(cert))
	}
	if len(ssl) > math.MaxUint16 {
		return nil, fmt.Errorf("proxy TLV ssl: %d bytes", len(ssl))
	}
	tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_SSL, Value: ssl})

	if len(uniqueID) > 0 {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: uniqueID})
	}
	return tlvs, nil
}

// appendSubTLV appends one sub-TLV of PP2_TYPE_SSL, its value a string.
// The caller refuses an SSL TLV over 65535 bytes, which any sub-TLV too
// long for its length field makes.
func appendSubTLV(b []byte, t proxyproto.PP2Type, v string) []byte {
	b = append(b, byte(t))
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// PassthroughTLVs returns the PROXY v2 TLVs for a connection edgegate did not
// terminate: only PP2_TYPE_AUTHORITY with the SNI it read from the
// ClientHello, or none without SNI. The TLS facts are the upstream's own.
func PassthroughTLVs(sni string, uniqueID []byte) []proxyproto.TLV {
	var tlvs []proxyproto.TLV
	if sni != "" {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(sni)})
	}
	if len(uniqueID) > 0 {
		tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: uniqueID})
	}
	return tlvs
}

// tlsVersionName names a TLS version as OpenSSL's SSL_get_version does,
// which is what HAProxy sends and nginx's $ssl_protocol shows.
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS10:
		return "TLSv1"
	}
	return fmt.Sprintf("unknown(0x%04x)", v)
}

// openSSLCipherNames maps every suite crypto/tls can negotiate to the name
// OpenSSL gives it (`openssl ciphers -stdname`), which HAProxy sends in
// SSL_CIPHER and nginx shows as $ssl_cipher. TLS 1.3 suites keep their IANA
// names in OpenSSL.
var openSSLCipherNames = map[uint16]string{
	tls.TLS_AES_128_GCM_SHA256:       "TLS_AES_128_GCM_SHA256",
	tls.TLS_AES_256_GCM_SHA384:       "TLS_AES_256_GCM_SHA384",
	tls.TLS_CHACHA20_POLY1305_SHA256: "TLS_CHACHA20_POLY1305_SHA256",

	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:       "ECDHE-ECDSA-AES128-GCM-SHA256",
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:       "ECDHE-ECDSA-AES256-GCM-SHA384",
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-ECDSA-CHACHA20-POLY1305",
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA:          "ECDHE-ECDSA-AES128-SHA",
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA:          "ECDHE-ECDSA-AES256-SHA",
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256:       "ECDHE-ECDSA-AES128-SHA256",
	tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA:              "ECDHE-ECDSA-RC4-SHA",

	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:       "ECDHE-RSA-AES128-GCM-SHA256",
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384:       "ECDHE-RSA-AES256-GCM-SHA384",
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-RSA-CHACHA20-POLY1305",
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA:          "ECDHE-RSA-AES128-SHA",
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA:          "ECDHE-RSA-AES256-SHA",
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256:       "ECDHE-RSA-AES128-SHA256",
	tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA:         "ECDHE-RSA-DES-CBC3-SHA",
	tls.TLS_ECDHE_RSA_WITH_RC4_128_SHA:              "ECDHE-RSA-RC4-SHA",

	tls.TLS_RSA_WITH_AES_128_GCM_SHA256: "AES128-GCM-SHA256",
	tls.TLS_RSA_WITH_AES_256_GCM_SHA384: "AES256-GCM-SHA384",
	tls.TLS_RSA_WITH_AES_128_CBC_SHA:    "AES128-SHA",
	tls.TLS_RSA_WITH_AES_256_CBC_SHA:    "AES256-SHA",
	tls.TLS_RSA_WITH_AES_128_CBC_SHA256: "AES128-SHA256",
	tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA:   "DES-CBC3-SHA",
	tls.TLS_RSA_WITH_RC4_128_SHA:        "RC4-SHA",
}

// CipherSuiteName returns the OpenSSL name of a cipher suite, or Go's name
// for one OpenSSL has no entry for in the table.
func CipherSuiteName(id uint16) string {
	if n, ok := openSSLCipherNames[id]; ok {
		return n
	}
	return tls.CipherSuiteName(id)
}

// certSigAlgName names the algorithm that signed cert as OpenSSL's short
// object names do (what HAProxy sends in SSL_SIG_ALG).
func certSigAlgName(cert *x509.Certificate) string {
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA:
		return "RSA-MD5"
	case x509.SHA1WithRSA:
		return "RSA-SHA1"
	case x509.SHA256WithRSA:
		return "RSA-SHA256"
	case x509.SHA384WithRSA:
		return "RSA-SHA384"
	case x509.SHA512WithRSA:
		return "RSA-SHA512"
	case x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS:
		return "RSASSA-PSS"
	case x509.DSAWithSHA1:
		return "DSA-SHA1"
	case x509.DSAWithSHA256:
		return "dsa_with_SHA256"
	case x509.ECDSAWithSHA1:
		return "ecdsa-with-SHA1"
	case x509.ECDSAWithSHA256:
		return "ecdsa-with-SHA256"
	case x509.ECDSAWithSHA384:
		return "ecdsa-with-SHA384"
	case x509.ECDSAWithSHA512:
		return "ecdsa-with-SHA512"
	case x509.PureEd25519:
		return "ED25519"
	}
	return "UNKNOWN"
}

// certKeyAlgName names cert's public key as HAProxy does: the algorithm
// followed by the key size in bits ("RSA2048", "EC256").
func certKeyAlgName(cert *x509.Certificate) string {
	switch k := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		return "RSA" + strconv.Itoa(k.N.BitLen())
	case *ecdsa.PublicKey:
		return "EC" + strconv.Itoa(k.Curve.Params().BitSize)
	case ed25519.PublicKey:
		return "ED25519"
	}
	return "UNKNOWN"
}
