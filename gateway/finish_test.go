package gateway

import (
	"testing"
	"time"
)

// TestRefusalLogRateLimit: a flood of refusals writes a burst of lines, then
// a few a second, and the next line written says how many were left out.
func TestRefusalLogRateLimit(t *testing.T) {
	r := rateLimit{perSecond: 10, burst: 50}
	now := time.Unix(1000, 0)
	written := 0
	for range 1000 {
		if ok, _ := r.allow(now); ok {
			written++
		}
	}
	if written != 50 {
		t.Fatalf("%d lines for 1,000 refusals at one instant, want the burst of 50", written)
	}
	// A second later there is room for 10 more; the first says 950 were dropped.
	ok, suppressed := r.allow(now.Add(time.Second))
	if !ok || suppressed != 950 {
		t.Fatalf("after a second: allowed %v, suppressed %d; want true, 950", ok, suppressed)
	}
	for range 9 {
		if ok, _ := r.allow(now.Add(time.Second)); !ok {
			t.Fatal("fewer than 10 lines a second")
		}
	}
	if ok, _ := r.allow(now.Add(time.Second)); ok {
		t.Fatal("more than 10 lines a second")
	}
}
