package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
)

// heapFloorEnv names the environment variable that sets the heap floor: a
// size in bytes, with an optional KiB, MiB or GiB suffix; 0 (the default)
// turns it off.
const heapFloorEnv = "EDGEGATE_HEAP_FLOOR"

// defaultHeapFloor is the heap floor when heapFloorEnv is not set: none.
// A floor holds up to its size in garbage on a quiet gateway, and the
// harness's idle-connections scenario (200 to 1,000 connections, a live
// heap below the floor) measured 20 KiB per idle mtls connection without
// one and 30 KiB with 32 MiB, so it is the operator's choice.
const defaultHeapFloor = 0

// A heap floor keeps the garbage collector's heap goal at or above floor
// bytes. The runtime's own minimum goal is 4 MiB, which a gateway whose
// live heap is a few MiB reaches every few dozen mtls handshakes (each
// allocates tens of KiB inside crypto/tls): a collection, with its stop of
// the world and its wake-up of sysmon, every 20 to 30 ms under load, about
// a twentieth of the process's CPU. Go has no setting for the minimum, so
// after each collection the floor sets GOGC to what puts the next goal at
// floor, never below the GOGC the process started with: once the live
// heap is half the floor or more (thousands of idle connections), the goal
// is GOGC's as without it, and the memory an idle connection costs is the
// same. What the floor costs is up to floor bytes of garbage held between
// collections on a lightly loaded gateway.
type heapFloor struct {
	floor  uint64
	base   int // the GOGC the process started with
	sample []metrics.Sample
}

// startHeapFloor reads heapFloorEnv and starts the floor; it returns an
// error for a value it cannot read. GOGC=off, or a floor of 0, leaves the
// collector alone.
func startHeapFloor() error {
	floor := uint64(defaultHeapFloor)
	if s, ok := os.LookupEnv(heapFloorEnv); ok {
		n, err := parseSize(s)
		if err != nil {
			return fmt.Errorf("%s=%q: %v", heapFloorEnv, s, err)
		}
		floor = n
	}
	floorOnce.Do(func() {
		base := debug.SetGCPercent(100)
		debug.SetGCPercent(base)
		if floor == 0 || base < 0 {
			return
		}
		h := &heapFloor{floor: floor, base: base, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
		h.adjust()
		h.arm()
	})
	return nil
}

// floorOnce starts one floor per process (tests run cmdRun many times).
var floorOnce sync.Once

// arm sets a finalizer on a fresh object, which runs after the next
// collection: each run adjusts GOGC and arms the next one.
func (h *heapFloor) arm() {
	runtime.SetFinalizer(new([16]byte), func(*[16]byte) {
		h.adjust()
		h.arm()
	})
}

// adjust sets GOGC for the live heap the last collection left.
func (h *heapFloor) adjust() {
	metrics.Read(h.sample)
	live := uint64(0)
	if h.sample[0].Value.Kind() == metrics.KindUint64 {
		live = h.sample[0].Value.Uint64()
	}
	debug.SetGCPercent(floorPercent(h.floor, live, h.base))
}

// floorPercent is the GOGC that puts the heap goal at floor, and never
// below base. The goal is the larger of live × (1 + GOGC/100) and the
// runtime's minimum, 4 MiB × GOGC/100, so GOGC is bounded by both.
func floorPercent(floor, live uint64, base int) int {
	const minimum = 4 << 20 // the runtime's minimum goal at GOGC=100
	live = max(live, 1<<20)
	p := int(min(floor*100/live, floor*100/minimum+100)) - 100
	return max(p, base)
}

// parseSize reads a size: a number of bytes, or one followed by KiB, MiB or
// GiB.
func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if t, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = t, u.mult
			break
		}
	}
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want a number of bytes, or of KiB, MiB or GiB")
	}
	return n * mult, nil
}
