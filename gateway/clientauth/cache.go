package clientauth

import (
	"container/list"
	"sync"
	"sync/atomic"
	"time"
)

// Cache remembers client certificate chains that verified, keyed by a
// digest of the presented chain and the trust generation, with the window in
// which the whole chain is valid. Only successes are stored. It is safe for
// concurrent use; the zero value is not usable, call NewCache.
//
// It is a segmented LRU. A chain enters a probation segment when it
// verifies and moves to a protected segment the first time it is found
// again. A client that presents a new chain on every handshake (each one
// verified, none ever seen twice) only churns probation, so it cannot push
// out the chain Cloudflare presents millions of times; a protected chain
// leaves only for another chain that was itself presented at least twice,
// or when its window closes.
type Cache struct {
	mu        sync.Mutex
	entries   map[[32]byte]*list.Element // of *cacheEntry
	probation list.List                  // most recent first
	protected list.List                  // most recent first
	size      int                        // bound on both segments together
	protCap   int                        // bound on protected

	hits, misses atomic.Uint64
}

type cacheEntry struct {
	key       [32]byte
	w         window
	protected bool
}

// protectedShare is the part of a Cache that chains found more than once
// may hold; the rest is probation, which also takes whatever protected
// leaves unused.
const protectedShare = 0.75

// NewCache returns a cache holding at most size chains (at least 1): up to
// three quarters of them chains that were found again after they verified,
// the rest chains seen once, the least recently used of each evicted first.
func NewCache(size int) *Cache {
	size = max(size, 1)
	return &Cache{
		entries: make(map[[32]byte]*list.Element),
		size:    size,
		protCap: int(float64(size) * protectedShare),
	}
}

// valid reports whether key is cached and now lies inside its window, and
// counts the lookup as a hit or a miss. An entry found outside its window is
// dropped: a chain that expired never becomes valid again, and one not yet
// valid is cheap to verify once more. A hit in probation promotes the entry.
func (c *Cache) valid(key [32]byte, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		c.misses.Add(1)
		return false
	}
	e := el.Value.(*cacheEntry)
	if now.Before(e.w.notBefore) || now.After(e.w.notAfter) {
		c.remove(el)
		c.misses.Add(1)
		return false
	}
	c.hits.Add(1)
	switch {
	case e.protected:
		c.protected.MoveToFront(el)
	case c.protCap > 0:
		c.probation.Remove(el)
		e.protected = true
		c.entries[key] = c.protected.PushFront(e)
		if c.protected.Len() > c.protCap {
			// The least recently used protected chain goes back to
			// probation, where it gets one more chance.
			back := c.protected.Back()
			d := c.protected.Remove(back).(*cacheEntry)
			d.protected = false
			c.entries[d.key] = c.probation.PushFront(d)
		}
	default:
		c.probation.MoveToFront(el)
	}
	return true
}

// add stores a chain that just verified in probation, evicting the least
// recently used chain of probation when the cache is full.
func (c *Cache) add(key [32]byte, w window) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		el.Value.(*cacheEntry).w = w
		return
	}
	c.entries[key] = c.probation.PushFront(&cacheEntry{key: key, w: w})
	// protected never exceeds protCap < size, so a full cache always has
	// a probation entry to give up.
	for len(c.entries) > c.size && c.probation.Len() > 0 {
		c.remove(c.probation.Back())
	}
}

func (c *Cache) remove(el *list.Element) {
	e := el.Value.(*cacheEntry)
	if e.protected {
		c.protected.Remove(el)
	} else {
		c.probation.Remove(el)
	}
	delete(c.entries, e.key)
}

// Len returns the number of cached chains.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Stats returns how many lookups found a chain valid in the cache (hits)
// and how many went on to a full verification (misses), since NewCache.
func (c *Cache) Stats() (hits, misses uint64) {
	return c.hits.Load(), c.misses.Load()
}
