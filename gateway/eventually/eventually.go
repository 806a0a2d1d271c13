// Package eventually is the one way edgegate's tests wait for something
// that happens on its own time (a counter a connection moves when it ends,
// a log line, a block that expires): poll a check until it passes or a
// deadline comes, and fail with the check's last word. No test sleeps for
// a guessed time and hopes.
//
//	eventually.Within(t, 10*time.Second, func() error {
//		if got := s.count(...); got != want {
//			return fmt.Errorf("count = %v, want %v", got, want)
//		}
//		return nil
//	})
package eventually

import (
	"testing"
	"time"
)

// Within calls check until it returns nil, and fails t with check's last
// error if that takes longer than limit. It polls quickly at first (1 ms)
// and backs off to every 50 ms.
func Within(t testing.TB, limit time.Duration, check func() error) {
	t.Helper()
	if err := Poll(limit, check); err != nil {
		t.Fatalf("after %v: %v", limit, err)
	}
}

// Poll calls check until it returns nil or limit has passed, and returns
// check's last error (nil when it passed), for tests that fail in their
// own words or poll outside the test goroutine.
func Poll(limit time.Duration, check func() error) error {
	deadline := time.Now().Add(limit)
	pause := time.Millisecond
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}
