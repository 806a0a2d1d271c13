package eventually

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	calls := 0
	err := Poll(time.Second, func() error {
		calls++
		if calls < 5 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if err != nil || calls != 5 {
		t.Fatalf("Poll = %v after %d calls; want nil after 5", err, calls)
	}
	start := time.Now()
	err = Poll(30*time.Millisecond, func() error { return errors.New("never") })
	if err == nil || err.Error() != "never" {
		t.Fatalf("Poll = %v; want the check's last error", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("Poll gave up after %v, before its limit", d)
	}
}
