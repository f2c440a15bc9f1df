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
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
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
		return runHook(args[1:], os.Stdin, os.Stdout, os.Stderr)
	case "wrap":
		return runWrapper(args[1:], os.Stdout, os.Stderr)
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
	if isPluginFlag(args[0]) {
		// natrontech/cainjekt's image runs its plugin on flags alone.
		fmt.Fprintf(os.Stderr, "cainjekt: %s is a flag of cainjekt plugin, and the command comes first:\n  cainjekt plugin %s\n"+
			"(in a pod spec: args: [%s])\n", args[0], shellJoin(args), podArgs(append([]string{"plugin"}, args...)))
		return 2
	}
	fmt.Fprintf(os.Stderr, "cainjekt: unknown command %q\n", args[0])
	usage(os.Stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: cainjekt COMMAND [FLAGS] [ARGS]

commands:
  plugin    run the NRI plugin
  hook      the OCI hook, run by the container runtime
  wrap      the entrypoint wrapper, run inside the container
  lint      check a CA bundle as the plugin would load it: cainjekt lint [--strict] FILE
  install   copy the hook binary to the node: cainjekt install [--src F] --dest /opt/cainjekt/bin/cainjekt-hook
  doctor    check this node's set-up with the plugin's configuration, read-only
  inspect   dry-run the hook on a directory: cainjekt inspect [--ca-file F] [--env K=V]... ROOTFS
  version   print the version

cainjekt COMMAND -h prints a command's usage and flags. Flags may also follow
a command's arguments (not wrap's: what follows wrap is the container's).
`)
}

// parseFlags parses a command's flags and returns its arguments. Flags may
// follow the arguments too, although Go's flag package stops at the first
// argument; "--" ends them. -h or --help prints the usage and the flags on
// stdout and returns flag.ErrHelp; a bad flag is reported on stderr.
func parseFlags(fs *flag.FlagSet, usage string, args []string, stdout, stderr io.Writer) ([]string, error) {
	fs.SetOutput(io.Discard) // the flag package would print its usage on every error
	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, usage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return nil, err
		}
		if err != nil {
			synopsis, _, _ := strings.Cut(usage, "\n")
			fmt.Fprintf(stderr, "%s: %v\n%s\n", fs.Name(), err, synopsis)
			return nil, err
		}
		rest := fs.Args()
		if parsed := len(args) - len(rest); len(rest) == 0 || parsed > 0 && args[parsed-1] == "--" {
			return append(positional, rest...), nil
		}
		positional, args = append(positional, rest[0]), rest[1:]
	}
}

// flagsExit is the exit code of a command whose flags did not parse: 0
// when it was asked for help.
func flagsExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// pluginConfig is loadConfig for the commands that take the plugin's
// flags: -h prints the command's usage and those flags on stdout.
func pluginConfig(command, usage string, args []string, getenv func(string) string, stdout, stderr io.Writer) (*config, error) {
	var out bytes.Buffer // the flag package's output: its usage, on -h
	cfg, err := loadConfig(args, getenv, &out)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, usage)
		for _, s := range settings {
			def := ""
			if s.def != "" {
				def = fmt.Sprintf(", default %q", s.def)
			}
			env := s.env
			if alias := aliases[s.flag]; alias != "" {
				env += " or " + alias
			}
			fmt.Fprintf(stdout, "  --%s (env %s%s)\n    \t%s\n", s.flag, env, def, s.usage)
		}
		return nil, err
	}
	stderr.Write(out.Bytes())
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", command, err)
	}
	return cfg, err
}

// isPluginFlag says whether arg is one of cainjekt plugin's flags.
func isPluginFlag(arg string) bool {
	name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-"), "=")
	return strings.HasPrefix(arg, "-") && slices.ContainsFunc(settings, func(s setting) bool { return s.flag == name })
}

// shellJoin writes args as a shell reads them back.
func shellJoin(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = a
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`!*?[]{}()<>|&;#~") {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(quoted, " ")
}

// podArgs writes args as a pod spec's args list.
func podArgs(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = strconv.Quote(a)
	}
	return strings.Join(quoted, ", ")
}

const pluginUsage = `usage: cainjekt plugin [FLAGS]

Runs the NRI plugin until SIGTERM. Each flag has an environment variable; a
flag wins over its variable, the variable over the default.

flags:`

// runPlugin is `cainjekt plugin`.
func runPlugin(args []string) int {
	cfg, err := pluginConfig("cainjekt plugin", pluginUsage, args, os.Getenv, os.Stdout, os.Stderr)
	if err != nil {
		return flagsExit(err)
	}
	log := newLogger(os.Stderr, cfg.logFormat, cfg.logLevel)
	if err := startPlugin(cfg, log); err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	return 0
}

// warnUnknownVariables logs each CAINJEKT_* variable no setting reads.
func warnUnknownVariables(log *slog.Logger, environ []string) {
	for _, v := range unknownVariables(environ) {
		log.Warn("unknown variable ignored: "+v.advice(), "variable", v.name)
	}
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
	log.Info("starting", "version", version, slog.Any("settings", slog.GroupValue(cfg.effective()...)))
	warnUnknownVariables(log, os.Environ())
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
