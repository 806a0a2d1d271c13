package sni

import (
	"bytes"
	"testing"
)

var benchVectors = []string{"go-pq.bin", "chromium.bin", "go-pq-split3.bin"}

// BenchmarkReadFrom measures reading and parsing a whole hello from a
// reader that holds it (the hot path after accept, minus the syscalls).
func BenchmarkReadFrom(b *testing.B) {
	for _, file := range benchVectors {
		wire := readVector(b, file)
		b.Run(file, func(b *testing.B) {
			r := bytes.NewReader(wire)
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(wire)
				if _, _, err := ReadFrom(r, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParse measures parsing one ClientHello message already in memory.
func BenchmarkParse(b *testing.B) {
	for _, file := range benchVectors[:2] {
		wire := readVector(b, file)
		msg := wire[recordHeaderLen:]
		b.Run(file, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCryptoTLSHello is the baseline for BenchmarkReadFrom: Go's own
// crypto/tls server reading the same bytes over a net.Pipe up to
// GetConfigForClient (goroutines and pipe included, as a real server pays).
func BenchmarkCryptoTLSHello(b *testing.B) {
	for _, file := range benchVectors[:2] {
		wire := readVector(b, file)
		b.Run(file, func(b *testing.B) {
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			for b.Loop() {
				if g := goServerName(wire); !g.parsed {
					b.Fatal(g.err)
				}
			}
		})
	}
}
