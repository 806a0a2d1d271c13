//go:build race

package main_test

// The binary under test is built with the race detector when the tests are,
// so a data race in the running gateway fails the run (exit status 66).
func init() { raceEnabled = true }
