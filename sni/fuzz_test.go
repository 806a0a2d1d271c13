package sni

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// fuzzCaps are the size caps each fuzz input is read with: the default, and
// one small enough that real hellos hit it.
var fuzzCaps = []int{DefaultMaxSize, 512}

func addFuzzSeeds(f *testing.F) {
	for _, w := range vectors {
		wire, err := readFile(w.file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wire, []byte(nil))
		f.Add(wire, []byte{0})     // 1-byte segments
		f.Add(wire, []byte{4, 99}) // 5 then 100
	}
	for _, in := range seedInputs() {
		f.Add(in, []byte{1, 2})
	}
}

// seedInputs are hand-made inputs for the fuzz corpus and the differential
// test: each failure kind, fragmentation, and server names that test the
// routing rule (case, trailing dot, IP literals, invalid names).
func seedInputs() [][]byte {
	goodMsg := hello(sniExt("a.example"))
	in := [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		[]byte("SSH-2.0-OpenSSH_9.2\r\n"),
		{0x80, 0x2e, 0x01, 0x00, 0x02},
		record(recordTypeAlert, 0x0303, []byte{2, 40}),
		record(recordTypeHandshake, 0x0301, goodMsg),
		record(recordTypeHandshake, 0x0200, goodMsg),
		record(recordTypeHandshake, 0x0305, goodMsg),
		cat(record(recordTypeHandshake, 0x0301, goodMsg[:7]), record(recordTypeHandshake, 0x0303, goodMsg[7:])),
		cat(record(recordTypeHandshake, 0x0301, goodMsg[:2]), record(recordTypeHandshake, 0x0301, nil), record(recordTypeHandshake, 0x0301, goodMsg[2:])),
		// A status_request extension that Go checks and edgegate skips.
		record(recordTypeHandshake, 0x0301, hello(cat(sniExt("status.example"), ext(5, []byte{1, 0})))),
		record(recordTypeHandshake, 0x0301, hello(nil)),
		record(recordTypeHandshake, 0x0301, hello(ext(extALPN, []byte{0, 3, 2, 'h', '2'}))),
	}
	for _, name := range []string{
		"Trailing.Dot.", "UPPER.Example.COM", "192.0.2.1", "127.1", "::1", "bad name",
		"-x.example", "a..b", "b\xc3\xbccher.example", "x_y.example", "*.example.com",
		strings.Repeat("a", 64) + ".example", strings.Repeat("abc.", 70) + "com",
	} {
		in = append(in, record(recordTypeHandshake, 0x0301, hello(sniExt(name))))
	}
	return in
}

// FuzzRead feeds arbitrary bytes through an arbitrary segmentation: each
// byte of segs is one segment size minus one, cycled; empty segs means one
// segment. It checks that ReadFrom never panics, never reads past the cap,
// hands back exactly the bytes it consumed in order, and that the outcome
// does not depend on the segmentation.
func FuzzRead(f *testing.F) {
	addFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data, segs []byte) {
		sizes := make([]int, len(segs))
		for i, s := range segs {
			sizes[i] = int(s) + 1
		}
		for _, maxSize := range fuzzCaps {
			r := &segmentReader{data: data, sizes: sizes}
			h, prefix, err := ReadFrom(r, maxSize)
			if len(prefix) > maxSize {
				t.Fatalf("prefix %d bytes, cap %d", len(prefix), maxSize)
			}
			if r.given != len(prefix) {
				t.Fatalf("read %d bytes from the reader, prefix holds %d", r.given, len(prefix))
			}
			if !bytes.Equal(prefix, data[:len(prefix)]) {
				t.Fatalf("prefix is not the first %d input bytes in order", len(prefix))
			}
			if (h == nil) == (err == nil) {
				t.Fatalf("Hello %v with error %v", h, err)
			}
			if err != nil && countKinds(err) != 1 {
				t.Fatalf("error %q wraps %d failure kinds", err, countKinds(err))
			}
			if h != nil {
				if h.Length > len(prefix) || h.Length < handshakeHeaderLen {
					t.Fatalf("Length %d with a %d-byte prefix", h.Length, len(prefix))
				}
				if len(h.RawServerName) < maxRawServerName && h.ServerName != NormalizeName(h.RawServerName) {
					t.Fatalf("ServerName %q is not NormalizeName(%q)", h.ServerName, h.RawServerName)
				}
			}

			// The same bytes in one segment give the same outcome.
			h1, prefix1, err1 := ReadFrom(bytes.NewReader(data), maxSize)
			if !reflect.DeepEqual(h, h1) {
				t.Fatalf("segmented Hello %+v, one-shot %+v", h, h1)
			}
			if err == nil && !bytes.Equal(prefix, prefix1) {
				t.Fatalf("segmented prefix %d bytes, one-shot %d", len(prefix), len(prefix1))
			}
			if kind(err) != kind(err1) {
				t.Fatalf("segmented error %v, one-shot %v", err, err1)
			}
		}
	})
}

func kind(err error) error {
	for _, k := range []error{ErrNotTLS, ErrNotHandshake, ErrMalformed, ErrTooLarge, ErrTimeout, ErrClosed} {
		if errors.Is(err, k) {
			return k
		}
	}
	return err
}
