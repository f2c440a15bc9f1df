package testbed

import (
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"
)

// RunSuite is a real-node suite's TestMain: it needs root, runs setUp, the
// tests and the cleanups setUp registered (last first), and prints the
// summary whose last line is "N passed, N failed" (a skipped test is
// neither, and named above it). A failed setUp counts
// as one failure. It returns the exit code.
func RunSuite(m *testing.M, name string, setUp func(cleanup func(func())) error) int {
	if os.Geteuid() != 0 {
		fmt.Fprintf(os.Stderr, "%s: needs root\n", name)
		fmt.Println("0 passed, 1 failed")
		return 1
	}
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	if err := setUp(func(f func()) { cleanups = append(cleanups, f) }); err != nil {
		fmt.Fprintf(os.Stderr, "%s setup: %v\n", name, err)
		fmt.Println("0 passed, 1 failed")
		return 1
	}
	code := m.Run()
	summary.print()
	return code
}

// summary holds the suite's outcomes.
var summary results

type results struct {
	sync.Mutex
	passed, failed, skipped []string
}

// Track records the test's outcome for the summary; onFailure, if set,
// runs when it failed, e.g. to log what the plugin said.
func Track(t *testing.T, onFailure func()) {
	t.Cleanup(func() {
		summary.Lock()
		defer summary.Unlock()
		if t.Skipped() {
			summary.skipped = append(summary.skipped, t.Name())
			return
		}
		if !t.Failed() {
			summary.passed = append(summary.passed, t.Name())
			return
		}
		summary.failed = append(summary.failed, t.Name())
		if onFailure != nil {
			onFailure()
		}
	})
}

func (r *results) print() {
	r.Lock()
	defer r.Unlock()
	sort.Strings(r.failed)
	for _, name := range r.skipped {
		fmt.Printf("SKIPPED: %s\n", name)
	}
	for _, name := range r.failed {
		fmt.Printf("FAILED: %s\n", name)
	}
	fmt.Printf("%d passed, %d failed\n", len(r.passed), len(r.failed))
}
