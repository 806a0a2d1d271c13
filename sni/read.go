// Package sni reads a TLS ClientHello from the start of a connection without
// consuming it: every byte read is handed back so the caller can replay the
// stream whole to an upstream, or terminate TLS over it.
//
// Typical use in an accept loop:
//
//	hello, prefix, err := sni.Read(conn, sni.Options{Timeout: 5 * time.Second})
//	if err != nil {
//		// errors.Is(err, sni.ErrNotTLS), sni.ErrTimeout, ... name the outcome
//		conn.Close()
//		return
//	}
//	route := routes.Lookup(hello.ServerName)
//	upstream.Write(prefix) // then copy both ways
//
// A ClientHello may be split across TCP segments (down to one byte each) and
// across several TLS handshake records (RFC 8446, section 5.1); Read
// reassembles both, and never reads more than Options.MaxSize bytes.
//
// Record-level versions: every record header of the hello must carry major
// version 3 and minor version 0 to 4 (0x0300 to 0x0304). Real clients send
// 0x0301 (TLS 1.3, Chromium, Go, OpenSSL) or 0x0303, and old stacks 0x0300;
// RFC 8446 says the field is to be ignored, so any of these is accepted on
// any record. A first record that starts with 0x16 but whose version major is
// not 3 is not TLS (ErrNotTLS); major 3 with a minor above 4 is ErrMalformed.
package sni

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// DefaultMaxSize is the cap on bytes read for one ClientHello when
// Options.MaxSize is 0. A post-quantum Chromium hello is about 2 KB; 16 KiB
// leaves room for large session tickets and PSK identities.
const DefaultMaxSize = 16384

// Options bound a read.
type Options struct {
	// MaxSize caps the bytes read from the wire for one hello, 5-byte record
	// headers included. 0 means DefaultMaxSize.
	MaxSize int
	// Timeout is the deadline for the whole hello, counted from the call to
	// Read. 0 means Read sets no deadline (one the caller set still applies).
	Timeout time.Duration
}

// Failure kinds. Every error from Read, ReadFrom and Parse wraps exactly one
// of these, so callers can name the outcome with errors.Is.
var (
	// ErrNotTLS: the first bytes are not a TLS record header at all
	// ("GET /", "SSH-2.0-", an SSLv2 hello with its high bit set, noise).
	ErrNotTLS = errors.New("sni: not TLS")
	// ErrNotHandshake: a TLS record, but not a handshake record, or a
	// handshake message that is not a ClientHello.
	ErrNotHandshake = errors.New("sni: not a ClientHello")
	// ErrMalformed: a ClientHello whose structure is broken.
	ErrMalformed = errors.New("sni: malformed ClientHello")
	// ErrTooLarge: the hello would exceed the size cap.
	ErrTooLarge = errors.New("sni: ClientHello too large")
	// ErrTimeout: the deadline passed before a complete hello arrived.
	ErrTimeout = errors.New("sni: timed out reading ClientHello")
	// ErrClosed: the peer closed (or reset, or the read failed) before a
	// complete hello arrived, including before sending any byte.
	ErrClosed = errors.New("sni: connection closed before ClientHello")
)

const (
	recordHeaderLen    = 5
	handshakeHeaderLen = 4
	maxRecordBody      = 1 << 14 // RFC 8446 5.1: TLSPlaintext.length <= 2^14

	recordTypeChangeCipherSpec = 20
	recordTypeAlert            = 21
	recordTypeHandshake        = 22
	recordTypeApplicationData  = 23
	recordTypeHeartbeat        = 24

	handshakeTypeClientHello = 1

	// initialBuffer holds a typical hello (OpenSSL, curl, Go, Chromium with
	// a post-quantum share all fit) so the common case allocates once.
	initialBuffer = 2048
	// maxEmptyReads bounds a reader that keeps returning (0, nil).
	maxEmptyReads = 100
)

// Read reads from conn until one complete ClientHello is available. It sets
// conn's read deadline from opts.Timeout and clears it before returning. It
// returns every byte it read (prefix), also on error, so the stream can be
// replayed whole; it never reads more than opts.MaxSize bytes, and it reads
// nothing past the record that completes the hello.
func Read(conn net.Conn, opts Options) (*Hello, []byte, error) {
	if opts.Timeout > 0 {
		if err := conn.SetReadDeadline(time.Now().Add(opts.Timeout)); err != nil {
			return nil, nil, fmt.Errorf("%w: set read deadline: %w", ErrClosed, err)
		}
		// Clearing is best effort: the caller is about to use or close conn,
		// and a failure here means it is already unusable.
		defer conn.SetReadDeadline(time.Time{})
	}
	return ReadFrom(conn, opts.MaxSize)
}

// ReadFrom is Read without deadlines, for any reader. maxSize 0 means
// DefaultMaxSize.
func ReadFrom(r io.Reader, maxSize int) (*Hello, []byte, error) {
	return ReadFromBuffer(r, maxSize, nil)
}

// ReadFromBuffer is ReadFrom reading into scratch (from its start, whatever
// its length) while the hello fits its capacity, so that a caller that
// reads hello after hello allocates no buffer for them. The bytes it returns
// then alias scratch; the Hello never does.
func ReadFromBuffer(r io.Reader, maxSize int, scratch []byte) (*Hello, []byte, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	buf := scratch[:0]
	if cap(buf) == 0 {
		buf = make([]byte, 0, min(initialBuffer, maxSize))
	}
	rd := reader{r: r, max: maxSize, buf: buf}
	msg, err := rd.readMessage()
	if err != nil {
		return nil, rd.buf, err
	}
	h, err := Parse(msg)
	if err != nil {
		return nil, rd.buf, err
	}
	return h, rd.buf, nil
}

// reader accumulates the wire bytes of one hello in buf.
type reader struct {
	r   io.Reader
	max int
	buf []byte
}

// fill reads until len(buf) >= n (n <= max), reading as much as arrives per
// call but never past n. check, if not nil, sees the bytes read so far after
// every read so that garbage is refused on its first byte instead of after a
// full header.
func (rd *reader) fill(n int, check func([]byte) error) error {
	if cap(rd.buf) < n {
		// Double (up to the cap) rather than grow to exactly n, so a hello in
		// many tiny records costs O(n) copying, not O(n^2). The common
		// single-record hello fits initialBuffer and never grows.
		grown := make([]byte, len(rd.buf), max(n, min(2*cap(rd.buf), rd.max)))
		copy(grown, rd.buf)
		rd.buf = grown
	}
	empty := 0
	for len(rd.buf) < n {
		k, err := rd.r.Read(rd.buf[len(rd.buf):n])
		if k < 0 || k > n-len(rd.buf) {
			return fmt.Errorf("%w: reader returned invalid count %d", ErrClosed, k)
		}
		rd.buf = rd.buf[:len(rd.buf)+k]
		if k > 0 && check != nil {
			if cerr := check(rd.buf); cerr != nil {
				return cerr
			}
		}
		if len(rd.buf) >= n {
			return nil
		}
		if err != nil {
			return classifyReadError(err, len(rd.buf))
		}
		if k == 0 {
			if empty++; empty >= maxEmptyReads {
				return fmt.Errorf("%w: after %d bytes: %w", ErrClosed, len(rd.buf), io.ErrNoProgress)
			}
		}
	}
	return nil
}

// classifyReadError maps a read error to a failure kind, keeping the
// original for errors.Is (os.ErrDeadlineExceeded, syscall.ECONNRESET, ...).
func classifyReadError(err error, have int) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: after %d bytes: %w", ErrTimeout, have, err)
	}
	return fmt.Errorf("%w: after %d bytes: %w", ErrClosed, have, err)
}

// readMessage reads records until one whole ClientHello handshake message is
// available and returns it, header included. For a hello in one record the
// result aliases rd.buf; a fragmented hello is copied into its own slice.
func (rd *reader) readMessage() ([]byte, error) {
	var (
		msg    []byte // reassembled handshake bytes when fragmented
		single []byte // handshake bytes of the first record
		need   = -1   // total handshake message length, once known
		first  = true
	)
	for {
		start := len(rd.buf)
		if start+recordHeaderLen > rd.max {
			return nil, fmt.Errorf("%w: next record header would pass %d bytes", ErrTooLarge, rd.max)
		}
		check := checkLaterHeader
		if first {
			check = checkFirstHeader
		}
		if err := rd.fill(start+recordHeaderLen, func(b []byte) error { return check(b[start:]) }); err != nil {
			return nil, err
		}
		hdr := rd.buf[start : start+recordHeaderLen]
		if err := check(hdr); err != nil {
			return nil, err
		}
		bodyLen := int(hdr[3])<<8 | int(hdr[4])
		if bodyLen == 0 {
			return nil, fmt.Errorf("%w: empty handshake record", ErrMalformed)
		}
		if bodyLen > maxRecordBody {
			return nil, fmt.Errorf("%w: record length %d exceeds 2^14", ErrMalformed, bodyLen)
		}
		end := start + recordHeaderLen + bodyLen
		if end > rd.max {
			return nil, fmt.Errorf("%w: record of %d bytes would pass %d bytes", ErrTooLarge, bodyLen, rd.max)
		}
		bodyStart := start + recordHeaderLen
		// The handshake header decides early whether this is a ClientHello
		// and whether it can fit, so a 1-byte trickle of a ServerHello or a
		// huge declared length is refused without waiting for the body.
		var checkBody func([]byte) error
		if first {
			checkBody = func(b []byte) error { return rd.checkHandshakeHeader(b[bodyStart:]) }
		}
		if err := rd.fill(end, checkBody); err != nil {
			return nil, err
		}
		body := rd.buf[bodyStart:end]
		if first {
			if err := rd.checkHandshakeHeader(body); err != nil {
				return nil, err
			}
			first = false
			if len(body) >= handshakeHeaderLen {
				need = handshakeHeaderLen + (int(body[1])<<16 | int(body[2])<<8 | int(body[3]))
				if len(body) >= need {
					// Bytes after the hello in the same record are kept in
					// the prefix for the upstream to judge; a client has
					// nothing to send there before the ServerHello.
					return body[:need], nil
				}
			}
			single = body
			continue
		}
		if msg == nil {
			limit := rd.max - recordHeaderLen
			if need > 0 {
				limit = need
			}
			msg = make([]byte, 0, limit)
			msg = append(msg, single...)
		}
		msg = append(msg, body...)
		if need < 0 && len(msg) >= handshakeHeaderLen {
			// The handshake header itself was split across records.
			if err := rd.checkHandshakeHeader(msg); err != nil {
				return nil, err
			}
			need = handshakeHeaderLen + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
		}
		if need >= 0 && len(msg) >= need {
			return msg[:need], nil
		}
	}
}

// checkFirstHeader classifies the first record header from its first byte
// on, so "GET /", "SSH-" and SSLv2 are refused as soon as they show.
func checkFirstHeader(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	typ := b[0]
	switch typ {
	case recordTypeHandshake:
	case recordTypeChangeCipherSpec, recordTypeAlert, recordTypeApplicationData, recordTypeHeartbeat:
		// A TLS record of another type, if the version looks like TLS.
		if len(b) < 2 {
			return nil
		}
		if b[1] != 3 {
			return fmt.Errorf("%w: first bytes %#x %#x", ErrNotTLS, b[0], b[1])
		}
		return fmt.Errorf("%w: record type %d", ErrNotHandshake, typ)
	default:
		return fmt.Errorf("%w: first byte %#x", ErrNotTLS, typ)
	}
	if len(b) >= 2 && b[1] != 3 {
		return fmt.Errorf("%w: record version major %d", ErrNotTLS, b[1])
	}
	if len(b) >= 3 && b[2] > 4 {
		return fmt.Errorf("%w: record version %#04x", ErrMalformed, uint16(b[1])<<8|uint16(b[2]))
	}
	return nil
}

// checkLaterHeader checks a continuation record: handshake fragments must
// not be interleaved with other records (RFC 8446 5.1).
func checkLaterHeader(b []byte) error {
	if len(b) >= 1 && b[0] != recordTypeHandshake {
		return fmt.Errorf("%w: record type %d inside a fragmented ClientHello", ErrMalformed, b[0])
	}
	if len(b) >= 3 && (b[1] != 3 || b[2] > 4) {
		return fmt.Errorf("%w: record version %#04x", ErrMalformed, uint16(b[1])<<8|uint16(b[2]))
	}
	return nil
}

// checkHandshakeHeader checks as much of the handshake header as b holds.
func (rd *reader) checkHandshakeHeader(b []byte) error {
	if len(b) >= 1 && b[0] != handshakeTypeClientHello {
		return fmt.Errorf("%w: handshake type %d", ErrNotHandshake, b[0])
	}
	if len(b) < handshakeHeaderLen {
		return nil
	}
	n := handshakeHeaderLen + (int(b[1])<<16 | int(b[2])<<8 | int(b[3]))
	// The smallest wire size of the message is one record header plus the
	// message itself.
	if recordHeaderLen+n > rd.max {
		return fmt.Errorf("%w: handshake message of %d bytes, cap %d", ErrTooLarge, n, rd.max)
	}
	return nil
}
