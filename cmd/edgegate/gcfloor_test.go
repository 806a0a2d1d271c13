package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/edgegate/edgegate/gateway/eventually"
)

// TestFloorPercent: the GOGC chosen puts the heap goal, as the runtime
// computes it, at the floor while the live heap is small, and is the
// process's own GOGC once the live heap alone reaches the floor.
func TestFloorPercent(t *testing.T) {
	const mib = 1 << 20
	goal := func(live uint64, gogc int) uint64 {
		return max(live*uint64(100+gogc)/100, 4*mib*uint64(gogc)/100)
	}
	for _, tc := range []struct {
		floor, live uint64
		base        int
	}{
		{32 * mib, 0, 100}, {32 * mib, 1 * mib, 100}, {32 * mib, 3 * mib, 100}, {32 * mib, 8 * mib, 100},
		{32 * mib, 15 * mib, 100}, {32 * mib, 16 * mib, 100}, {32 * mib, 200 * mib, 100},
		{32 * mib, 2 * mib, 50}, {64 * mib, 5 * mib, 200}, {32 * mib, 20 * mib, 200},
	} {
		p := floorPercent(tc.floor, tc.live, tc.base)
		g := goal(max(tc.live, mib), p)
		switch {
		case p < tc.base:
			t.Errorf("floor %d MiB, live %d MiB: GOGC %d below the base %d", tc.floor/mib, tc.live/mib, p, tc.base)
		case p > tc.base && (g < tc.floor*99/100 || g > tc.floor*101/100):
			t.Errorf("floor %d MiB, live %d MiB: GOGC %d puts the goal at %d MiB", tc.floor/mib, tc.live/mib, p, g/mib)
		case p == tc.base && goal(max(tc.live, mib), tc.base) < tc.floor*99/100:
			t.Errorf("floor %d MiB, live %d MiB: GOGC left at %d, goal %d MiB below the floor", tc.floor/mib, tc.live/mib, p, goal(tc.live, p)/mib)
		}
	}
}

func TestParseSize(t *testing.T) {
	for s, want := range map[string]uint64{"0": 0, "1024": 1024, "32MiB": 32 << 20, "4KiB": 4 << 10, "1GiB": 1 << 30, " 8 MiB": 8 << 20} {
		if got, err := parseSize(s); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "MiB", "-1", "32MB", "x"} {
		if _, err := parseSize(s); err == nil {
			t.Errorf("parseSize(%q) succeeded", s)
		}
	}
}

// TestHeapFloorRaisesGOGC: once started, the floor sets GOGC after a
// collection (this test process's live heap is far below 64 MiB).
func TestHeapFloorRaisesGOGC(t *testing.T) {
	t.Setenv(heapFloorEnv, "64MiB")
	if err := startHeapFloor(); err != nil {
		t.Fatal(err)
	}
	eventually.Within(t, 10*time.Second, func() error {
		runtime.GC()
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		if p <= 100 {
			return fmt.Errorf("GOGC %d, want above 100", p)
		}
		return nil
	})
}
