// Command pause is the sandbox process of the test bed's pods. It holds the pod's
// namespaces open, reaps orphans re-parented to it (it is PID 1 in a shared PID
// namespace), and exits cleanly on SIGTERM or SIGINT. It is built static (CGO_ENABLED=0)
// so the image needs nothing but this binary.
package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			return
		}
		reap()
	}
}

// reap collects every exited child without blocking; several exits may share one SIGCHLD.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}
