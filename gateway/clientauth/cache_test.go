package clientauth

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/testpki"
)

// A client that presents a new chain on every handshake, each one
// verifying, must not evict the chain a legitimate client keeps presenting:
// a plain LRU of 64 loses it after 64 one-off chains, the segmented cache
// keeps it through a flood many times its size, and stays bounded.
func TestCacheFloodKeepsRepeatedChain(t *testing.T) {
	p := newClientPKI(t)
	now := time.Now()
	const size = 64
	a := p.auth()
	a.Cache = NewCache(size)
	// The legitimate client connects twice before the flood: verified,
	// then found again.
	for range 2 {
		if r, err := a.verifyDER(p.valid.Certificate, now); r != "" {
			t.Fatalf("legitimate chain: %q %v", r, err)
		}
	}
	hits, misses := a.Cache.Stats()
	if hits != 1 || misses != 1 {
		t.Fatalf("after two handshakes: %d hits, %d misses; want 1 and 1", hits, misses)
	}
	// The hostile client: the same valid leaf, but a fresh certificate
	// appended each time, so every chain is new, verifies, and is cached
	// once. Issuing a fresh leaf each time verifies the same way and
	// costs more to build.
	const flood = 10 * size
	for i := range flood {
		junk, err := testpki.SelfSigned("junk")
		if err != nil {
			t.Fatal(err)
		}
		chain := [][]byte{p.valid.Certificate[0], junk.Certificate[0]}
		if r, err := a.verifyDER(chain, now); r != "" {
			t.Fatalf("hostile chain %d: %q %v", i, r, err)
		}
		if n := a.Cache.Len(); n > size {
			t.Fatalf("cache of %d holds %d chains", size, n)
		}
	}
	// A Verifier that trusts nothing but shares the generation can only
	// accept from the cache.
	blind := &Verifier{Generation: a.Generation, Cache: a.Cache}
	if r, err := blind.verifyDER(p.valid.Certificate, now); r != "" {
		t.Fatalf("the legitimate chain was evicted by %d one-off chains: %q %v", flood, r, err)
	}
	hits, misses = a.Cache.Stats()
	if hits != 2 || misses != 1+flood {
		t.Errorf("after the flood: %d hits, %d misses; want 2 and %d", hits, misses, 1+flood)
	}
}

// Protected chains are bounded too: chains found again push out the least
// recently used protected chain, which returns to probation, and the cache
// never holds more than its size.
func TestCacheSegmentsBounded(t *testing.T) {
	c := NewCache(8)
	w := window{notBefore: time.Unix(0, 0), notAfter: time.Unix(1<<40, 0)}
	now := time.Unix(1000, 0)
	key := func(i int) [32]byte {
		var k [32]byte
		binary.BigEndian.PutUint64(k[:], uint64(i))
		return k
	}
	for i := range 20 {
		c.add(key(i), w)
		if !c.valid(key(i), now) {
			t.Fatalf("key %d not found right after add", i)
		}
		if c.Len() > 8 || c.protected.Len() > 6 {
			t.Fatalf("after %d: %d entries, %d protected; want at most 8 and 6", i, c.Len(), c.protected.Len())
		}
	}
	// The last six were promoted; 12 and 13 were demoted to probation.
	for i := 12; i < 20; i++ {
		if _, ok := c.entries[key(i)]; !ok {
			t.Errorf("key %d evicted; want the 8 most recent kept", i)
		}
	}
	// Expired entries leave on lookup, from either segment.
	if c.valid(key(19), time.Unix(1<<41, 0)) || c.Len() != 7 {
		t.Errorf("expired protected entry still cached (%d entries)", c.Len())
	}
	// A cache of one has no room to protect anything but still caches.
	one := NewCache(1)
	one.add(key(1), w)
	if !one.valid(key(1), now) || !one.valid(key(1), now) || one.Len() != 1 {
		t.Error("cache of one lost its entry")
	}
	one.add(key(2), w)
	if one.valid(key(1), now) || !one.valid(key(2), now) {
		t.Error("cache of one kept the older entry")
	}
}
