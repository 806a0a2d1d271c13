package clientauth

import (
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Cache remembers client certificate chains that verified, keyed by a
// digest of the presented chain and the trust generation, with the window in
// which the whole chain is valid. Only successes are stored. It is safe for
// concurrent use; the zero value is not usable, call NewCache.
type Cache struct {
	lru *lru.Cache[[32]byte, window]
}

// NewCache returns a cache holding at most size chains (at least 1),
// evicting the least recently used.
func NewCache(size int) *Cache {
	if size < 1 {
		size = 1
	}
	c, err := lru.New[[32]byte, window](size)
	if err != nil {
		// lru.New fails only for a size below 1, excluded above.
		panic(err)
	}
	return &Cache{lru: c}
}

// valid reports whether key is cached and now lies inside its window. An
// entry found outside its window is dropped: a chain that expired never
// becomes valid again, and one not yet valid is cheap to verify once more.
func (c *Cache) valid(key [32]byte, now time.Time) bool {
	w, ok := c.lru.Get(key)
	if !ok {
		return false
	}
	if now.Before(w.notBefore) || now.After(w.notAfter) {
		c.lru.Remove(key)
		return false
	}
	return true
}

func (c *Cache) add(key [32]byte, w window) {
	c.lru.Add(key, w)
}

// Len returns the number of cached chains.
func (c *Cache) Len() int { return c.lru.Len() }
