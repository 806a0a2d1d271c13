package bench

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// The system under test runs on systemCPU and the load generator (with the
// upstreams, which are identical for every system) on loadCPU, so the two
// never compete for a core and the system's cost shows on its own core.
const (
	systemCPU = 0
	loadCPU   = 1
)

// pinSelf moves every thread of the current process to cpu. Linux applies
// sched_setaffinity to one thread, and new threads inherit the mask of the
// thread that creates them, so pinning all existing threads pins the process
// for good. It repeats until no unpinned thread is left, because the Go
// runtime may start a thread while the loop runs.
func pinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	for range 10 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("pin to CPU %d: %w", cpu, err)
		}
		changed := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			var cur unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &cur); err == nil && cur == set {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil {
				return fmt.Errorf("pin thread %d to CPU %d: %w", tid, cpu, err)
			}
			changed = true
		}
		if !changed {
			runtime.GOMAXPROCS(1)
			return nil
		}
	}
	return fmt.Errorf("pin to CPU %d: threads kept appearing", cpu)
}

// pinTree pins every thread of every process in root's tree to cpu. It backs
// up taskset for processes that were already running when pinning was asked.
func pinTree(root, cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	for _, pid := range procTree(root) {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			continue
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil {
				return fmt.Errorf("pin pid %d thread %d to CPU %d: %w", pid, tid, cpu, err)
			}
		}
	}
	return nil
}

// cpusAvailable reports whether both the system CPU and the load CPU exist
// in the current affinity mask, so pinning can keep them apart.
func cpusAvailable() bool {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return false
	}
	return set.IsSet(systemCPU) && set.IsSet(loadCPU)
}
