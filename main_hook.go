//go:build hookonly

// The hook binary, cainjekt-hook: the OCI hook and the wrapper, and
// nothing of the plugin. runc starts it once or twice for every injected
// container, so it is built without the plugin's dependencies (NRI, ttrpc,
// protobuf, net/http), whose initialisation and size would cost every
// container start milliseconds: `go build -tags hookonly`.
package main

import (
	"fmt"
	"os"
)

var version = "dev"

func main() { os.Exit(run(os.Args[1:])) }

// run is the binary's command line; it returns the exit code.
func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, hookBinaryUsage)
		return 2
	}
	switch args[0] {
	case "hook":
		return runHook(args[1:], os.Stdin, os.Stdout, os.Stderr)
	case "wrap":
		return runWrapper(args[1:], os.Stdout, os.Stderr)
	case "version", "--version":
		fmt.Println("cainjekt-hook", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(os.Stdout, hookBinaryUsage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "cainjekt-hook: unknown command %q\n", args[0])
	fmt.Fprint(os.Stderr, hookBinaryUsage)
	return 2
}

const hookBinaryUsage = `usage: cainjekt-hook COMMAND [FLAGS]

The container runtime runs this binary; the plugin is cainjekt.

commands:
  hook      the OCI hook, run by the container runtime (cainjekt-hook hook -h)
  wrap      the entrypoint wrapper, run inside the container (cainjekt-hook wrap -h)
  version   print the version
`
