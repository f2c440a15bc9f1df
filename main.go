//go:build !hookonly

// Command cainjekt makes containers trust an organisation's own CA
// certificates, through containerd's Node Resource Interface.
//
// It plays three parts:
//
//	cainjekt plugin   the NRI plugin, a DaemonSet pod on every node
//	cainjekt hook     the OCI createRuntime hook runc runs on the host
//	cainjekt wrap     the entrypoint wrapper, PID 1 in the container
//
// and for operators: lint (a CA bundle), install (the hook binary onto the
// node), doctor (a node's set-up) and inspect (the hook, dry-run, on a
// directory). runc runs the hook and the wrapper from cainjekt-hook, the
// same package built with -tags hookonly (main_hook.go).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = "dev"

const (
	sweepInterval      = time.Minute
	bundlePollInterval = 10 * time.Second
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		usage(os.Stderr)
		return 2
	}
	switch args[0] {
	case "plugin":
		return runPlugin(args[1:])
	case "hook":
		return runHook(args[1:], os.Stdin, os.Stderr)
	case "wrap":
		return runWrapper(args[1:], os.Stderr)
	case "lint":
		return runLint(args[1:], os.Stdout, os.Stderr)
	case "install":
		return runInstall(args[1:], os.Stdout, os.Stderr)
	case "doctor":
		return runDoctor(args[1:], os.Getenv, os.Stdout, os.Stderr)
	case "inspect":
		return runInspect(args[1:], os.Stdout, os.Stderr)
	case "version", "--version":
		fmt.Println("cainjekt", version)
		return 0
	case "help", "-h", "--help":
		usage(os.Stdout)
		return 0
	}
	fmt.Fprintf(os.Stderr, "cainjekt: unknown command %q\n", args[0])
	usage(os.Stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: cainjekt COMMAND [FLAGS]

commands:
  plugin    run the NRI plugin (flags: cainjekt plugin -h)
  hook      the OCI hook, run by the container runtime
  wrap      the entrypoint wrapper, run inside the container
  lint      check a CA bundle as the plugin would load it: cainjekt lint [--strict] FILE
  install   copy the hook binary to the node: cainjekt install [--src F] --dest /opt/cainjekt/bin/cainjekt-hook
            (default --src: cainjekt-hook beside this executable, else this executable)
  doctor    check this node's set-up with the plugin's configuration (flags: as plugin)
  inspect   dry-run the hook on a directory: cainjekt inspect [--ca-file F] [--env K=V] ROOTFS
  version   print the version
`)
}

// runPlugin is `cainjekt plugin`.
func runPlugin(args []string) int {
	cfg, err := loadConfig(args, os.Getenv, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cainjekt plugin: %v\n", err)
		return 2
	}
	log := newLogger(os.Stderr, cfg.logFormat, cfg.logLevel)
	if err := startPlugin(cfg, log); err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	return 0
}

// pluginGCPercent is the plugin's GOGC unless the environment sets one.
// Its live heap is a few MiB; Go's default of 100 lets the heap double
// before each collection, and on every node that doubling is resident.
const pluginGCPercent = 50

// startPlugin runs the plugin until SIGTERM or SIGINT.
func startPlugin(cfg *config, log *slog.Logger) error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(pluginGCPercent)
	}
	if err := cfg.resolveHostBinary(); err != nil {
		return err
	}
	st, err := openStager(cfg.dynamicCARoot)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.lock(); err != nil {
		return err
	}
	p := newPlugin(cfg, log, st)
	kube, err := newKubeClient(cfg.kubeAPI, cfg.kubeCAFile, cfg.kubeTokenFile, log.With("component", "kube"), p.metrics)
	if err != nil {
		return err
	}
	if kube != nil {
		p.policy.namespace = func(name string) (*namespaceInfo, error) { return kube.namespace(context.Background(), name) }
		p.events = newEventRecorder(kube, cfg.nodeName, log.With("component", "events"), p.metrics)
	} else {
		log.Info("namespace lookups and pod events are off: namespaces cannot opt in or pick a bundle", "hint", "run in a pod, or set CAINJEKT_KUBE_API")
	}
	stopHTTP, _, err := serveHTTP(cfg.httpAddr, endpoints(p.metrics, p), log)
	if err != nil {
		return err
	}
	defer stopHTTP()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("starting", "version", version, "socket", cfg.socket, "ca_file", cfg.caFile,
		"fail_policy", cfg.failPolicy, "injection_policy", cfg.injectionPolicy, "annotation_prefix", cfg.annotationPrefix,
		"dynamic_ca_root", cfg.dynamicCARoot, "host_binary", cfg.hostBinary)
	p.bundles.refresh() // load, and report a broken bundle, before the first container needs it

	go p.worker(ctx)
	if p.events != nil {
		go p.events.run(ctx)
	}
	p.run(ctx)
	// Staging directories stay: running containers still have them mounted.
	log.Info("stopping", "signal", context.Cause(ctx))
	return nil
}
