package bpf

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// blockRecorder stands in for the kernel blocklist in offender tests: the
// tracker's contract is the calls it makes.
type blockRecorder struct {
	mu    sync.Mutex
	calls map[netip.Addr]time.Time
	fail  bool
}

func (r *blockRecorder) block(addr netip.Addr, until time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errors.New("blocklist full")
	}
	if r.calls == nil {
		r.calls = map[netip.Addr]time.Time{}
	}
	r.calls[addr] = until
	return nil
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestOffenders(after int, never []netip.Prefix, size int) (*Offenders, *blockRecorder, *fakeClock) {
	rec := &blockRecorder{}
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o := NewOffenders(after, time.Minute, 10*time.Minute, never, size, rec.block)
	o.now = clock.now
	return o, rec, clock
}

func TestOffendersBlockAfterThreshold(t *testing.T) {
	o, rec, clock := newTestOffenders(3, nil, 16)
	a := netip.MustParseAddr("198.18.0.9")
	for i := range 2 {
		if o.Offence(a) {
			t.Fatalf("blocked after %d offences, want 3", i+1)
		}
		clock.advance(10 * time.Second)
	}
	if !o.Offence(a) {
		t.Fatal("not blocked after 3 offences within the window")
	}
	want := clock.t.Add(10 * time.Minute)
	if got := rec.calls[a]; !got.Equal(want) {
		t.Fatalf("blocked until %v, want %v", got, want)
	}
	if o.Len() != 0 {
		t.Fatalf("record kept after block: %d entries", o.Len())
	}
}

func TestOffendersWindowSlides(t *testing.T) {
	o, rec, clock := newTestOffenders(3, nil, 16)
	a := netip.MustParseAddr("2001:2::9")
	o.Offence(a)
	clock.advance(50 * time.Second)
	o.Offence(a)
	clock.advance(20 * time.Second) // the first offence is now 70s old
	if o.Offence(a) {
		t.Fatal("blocked although only 2 offences are within the last minute")
	}
	clock.advance(time.Second)
	if !o.Offence(a) {
		t.Fatal("not blocked on the third offence within a minute")
	}
	if len(rec.calls) != 1 {
		t.Fatalf("block calls: %v", rec.calls)
	}
}

func TestOffendersV4MappedIsOneSource(t *testing.T) {
	o, rec, _ := newTestOffenders(2, nil, 16)
	o.Offence(netip.MustParseAddr("::ffff:198.18.0.7"))
	if !o.Offence(netip.MustParseAddr("198.18.0.7")) {
		t.Fatal("v4-mapped and plain IPv4 counted as different sources")
	}
	if _, ok := rec.calls[netip.MustParseAddr("198.18.0.7")]; !ok {
		t.Fatalf("blocked %v, want the plain IPv4 address", rec.calls)
	}
}

func TestOffendersExactAddresses(t *testing.T) {
	o, _, _ := newTestOffenders(2, nil, 16)
	o.Offence(netip.MustParseAddr("2001:2::1"))
	if o.Offence(netip.MustParseAddr("2001:2::2")) {
		t.Fatal("neighbouring addresses share a record")
	}
}

func TestOffendersNeverBlock(t *testing.T) {
	never := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("::ffff:198.19.0.0/112")}
	o, rec, _ := newTestOffenders(1, never, 16)
	for _, s := range []string{"198.18.0.200", "::ffff:198.18.0.1", "198.19.3.4"} {
		if o.Offence(netip.MustParseAddr(s)) {
			t.Fatalf("%s blocked although in never_block", s)
		}
	}
	if !o.Offence(netip.MustParseAddr("198.18.1.1")) {
		t.Fatal("address outside never_block not blocked")
	}
	if len(rec.calls) != 1 || o.Len() != 0 {
		t.Fatalf("calls %v, table %d", rec.calls, o.Len())
	}
}

func TestOffendersTableIsBounded(t *testing.T) {
	o, rec, _ := newTestOffenders(2, nil, 100)
	base := netip.MustParseAddr("2001:2::").As16()
	for i := range 10000 {
		a := base
		a[14], a[15] = byte(i>>8), byte(i)
		o.Offence(netip.AddrFrom16(a))
	}
	if o.Len() != 100 {
		t.Fatalf("table holds %d sources, want the bound 100", o.Len())
	}
	if len(rec.calls) != 0 {
		t.Fatalf("single offences caused blocks: %d", len(rec.calls))
	}
}

func TestOffendersBlockFailure(t *testing.T) {
	o, rec, _ := newTestOffenders(1, nil, 16)
	rec.fail = true
	if o.Offence(netip.MustParseAddr("198.18.0.3")) {
		t.Fatal("reported blocked although block failed")
	}
}

func TestOffendersInvalidAddress(t *testing.T) {
	o, rec, _ := newTestOffenders(1, nil, 16)
	if o.Offence(netip.Addr{}) || len(rec.calls) != 0 {
		t.Fatal("zero address blocked")
	}
}

func TestOffendersConcurrent(t *testing.T) {
	rec := &blockRecorder{}
	o := NewOffenders(50, time.Hour, time.Minute, nil, 1000, rec.block)
	a := netip.MustParseAddr("198.18.0.5")
	var wg sync.WaitGroup
	var mu sync.Mutex
	blocks := 0
	for range 10 {
		wg.Go(func() {
			for range 100 {
				if o.Offence(a) {
					mu.Lock()
					blocks++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if blocks != 20 {
		t.Fatalf("1000 offences with after=50 gave %d blocks, want 20", blocks)
	}
}

// TestOffendersSetRules changes the rules as a reload does: a source made
// exempt is no longer counted, the new threshold and block time apply, and
// offences on record carry over.
func TestOffendersSetRules(t *testing.T) {
	o, rec, clock := newTestOffenders(3, nil, 64)
	a := netip.MustParseAddr("198.18.0.7")
	b := netip.MustParseAddr("198.18.0.8")
	o.Offence(a)
	o.Offence(b)
	o.SetRules(2, time.Minute, time.Hour, []netip.Prefix{netip.MustParsePrefix("198.18.0.7/32")})
	if o.Offence(a) {
		t.Fatal("a source made never_block was blocked")
	}
	if !o.Offence(b) {
		t.Fatal("the second offence did not block under the new threshold of 2")
	}
	if got, want := rec.calls[b], clock.now().Add(time.Hour); !got.Equal(want) {
		t.Fatalf("blocked until %v, want %v (the new block time)", got, want)
	}
	if _, blocked := rec.calls[a]; blocked {
		t.Fatal("the exempt source reached the blocklist")
	}
}
