// Command pulumi-language-python is the Python language host that `make pulumi-tools` builds
// beside the Pulumi CLI.
//
// Pulumi's own host lives in the module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3,
// which the Go module proxy these machines reach does not serve at any version, so it cannot be
// built here (tools/pulumi/README.md has the proxy's answers). This host speaks the same
// LanguageRuntime protocol and starts the program the way Pulumi's does: the SDK's own
// pulumi-language-python-exec (copied next to this binary from the pinned sdk/v3 module), run by
// the interpreter that the SDK's python/toolchain package resolves from Pulumi.yaml's runtime
// options. It serves what preview, up, refresh, destroy and `pulumi about` ask of a language host;
// code generation, templates, packing and dependency installation answer Unimplemented, because
// the bundle's virtualenv is made by `make venv`, not by Pulumi.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
)

// version is set by the build (-X main.version=...): this host's own label, never Pulumi's.
var version = "0.0.0-dev"

func main() {
	if err := serve(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	engine := engineAddress(args)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	execScript := filepath.Join(filepath.Dir(self), "pulumi-language-python-exec")
	if _, err := os.Stat(execScript); err != nil {
		return fmt.Errorf("%s is missing; run `make pulumi-tools` again", execScript)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The engine may die without telling us (kill -9 of `pulumi up`): then we stop too, and
	// the program we started dies with us (see sysproc_linux.go).
	if engine != "" {
		go func() { _ = rpcutil.Healthcheck(ctx, engine, 2*time.Second, cancel) }()
	}

	h := &host{engine: engine, execScript: execScript}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancelChannel(ctx),
		Init: func(s *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(s, h)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		return err
	}
	// The plugin protocol: the first line on stdout is the port.
	fmt.Printf("%d\n", handle.Port)
	return <-handle.Done
}

// engineAddress is the last positional argument; the engine may put logging and tracing flags
// before it, which this host does not use.
func engineAddress(args []string) string {
	for i := len(args) - 1; i >= 0; i-- {
		if !strings.HasPrefix(args[i], "-") {
			return args[i]
		}
	}
	return ""
}

func cancelChannel(ctx context.Context) chan bool {
	ch := make(chan bool, 1)
	go func() {
		<-ctx.Done()
		ch <- true
	}()
	return ch
}

var errNoProgramInfo = errors.New("the engine sent no program info; this host needs Pulumi CLI 3.100 or newer")

func (h *host) runCommand(ctx context.Context, info *pulumirpc.ProgramInfo, args ...string) (*exec.Cmd, error) {
	if info == nil {
		return nil, errNoProgramInfo
	}
	tc, err := resolveToolchain(info)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, fmt.Errorf("%w (the bundle's virtualenv is made by `make venv`)", err)
	}
	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.SysProcAttr = childAttributes()
	return cmd, nil
}
