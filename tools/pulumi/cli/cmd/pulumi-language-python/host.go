package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/emptypb"
)

// exitBail is pulumi-language-python-exec's code for "the error was already shown to the user".
const exitBail = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engine     string
	execScript string
}

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.GetEngineAddress() != "" {
		h.engine = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// Run starts the program as Pulumi's host does: one interpreter per run, the SDK's exec script,
// the stack's config in PULUMI_CONFIG, output straight to the engine's streams.
func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	if info == nil {
		return nil, errNoProgramInfo
	}
	program := info.GetProgramDirectory()
	if entry := info.GetEntryPoint(); entry != "" && entry != "." {
		program = filepath.Join(program, entry)
	}
	args := []string{
		"-u", h.execScript,
		"--monitor", req.GetMonitorAddress(),
		"--engine", h.engine,
		"--project", req.GetProject(),
		"--stack", req.GetStack(),
		"--pwd", req.GetPwd(),
		"--dry_run", strconv.FormatBool(req.GetDryRun()),
		"--parallel", strconv.Itoa(int(req.GetParallel())),
		"--organization", req.GetOrganization(),
		"--root_directory", info.GetRootDirectory(),
		program,
	}
	args = append(args, req.GetArgs()...)
	cmd, err := h.runCommand(ctx, info, args...)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	config, err := json.Marshal(nonNilMap(req.GetConfig()))
	if err != nil {
		return nil, err
	}
	secretKeys, err := json.Marshal(nonNil(req.GetConfigSecretKeys()))
	if err != nil {
		return nil, err
	}
	cmd.Env = append(cmd.Env, "PULUMI_CONFIG="+string(config), "PULUMI_CONFIG_SECRET_KEYS="+string(secretKeys))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			if exit.ExitCode() == exitBail {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("the Python program exited with code %d", exit.ExitCode())}, nil
		}
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// GetRequiredPackages lists the resource plugins that the installed Pulumi packages declare in
// their plugin.json, as Pulumi's host does, so that a missing plugin is reported before the
// program runs rather than at its first resource. Unlike Pulumi's host, the answer is cached
// for as long as the virtualenv's packages are unchanged (packages_cache.go): the scan starts
// an interpreter and reads every package's metadata, a tenth of a second of every run.
func (h *host) GetRequiredPackages(ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest) (*pulumirpc.GetRequiredPackagesResponse, error) {
	key := packagesKey(req.GetInfo())
	found, ok := readPackages(key)
	if !ok {
		var err error
		if found, err = h.scanPackages(ctx, req.GetInfo()); err != nil {
			return nil, err
		}
		writePackages(key, found)
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	for _, p := range found {
		resp.Packages = append(resp.Packages, &pulumirpc.PackageDependency{
			Kind: "resource", Name: p.Name, Version: p.Version, Server: p.Server,
		})
	}
	return resp, nil
}

type pluginPackage struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Server  string `json:"server"`
}

func (h *host) scanPackages(ctx context.Context, info *pulumirpc.ProgramInfo) ([]pluginPackage, error) {
	cmd, err := h.runCommand(ctx, info, "-c", listPluginsPy)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing the installed Pulumi packages failed: %w", err)
	}
	var found []pluginPackage
	if err := json.Unmarshal(out, &found); err != nil {
		return nil, fmt.Errorf("listing the installed Pulumi packages printed no JSON: %w", err)
	}
	return found, nil
}

// About answers without the SDK toolchain's About, which also runs `python -m pip --version`
// (a quarter of a second, in every preview and up) for a pip version the engine does not show:
// one interpreter start, without site, prints what the engine asks for.
func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-S", "-c", "import sys; print(sys.executable); print(sys.version.split()[0])")
	if err != nil {
		return nil, err
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("asking the Python interpreter its path and version failed: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		return nil, fmt.Errorf("the Python interpreter printed %q, not its path and version", out)
	}
	resp := &pulumirpc.AboutResponse{Executable: strings.TrimSpace(lines[0])}
	// As the SDK's About: an unparsable version is left out, not an error.
	if v, err := toolchain.ParsePythonVersion(lines[1]); err == nil {
		resp.Version = v.String()
	}
	return resp, nil
}

func resolveToolchain(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	if info == nil {
		return nil, errNoProgramInfo
	}
	opts := info.GetOptions().AsMap()
	py := toolchain.PythonOptions{Root: info.GetRootDirectory(), ProgramDir: info.GetProgramDirectory()}
	if v, ok := opts["virtualenv"].(string); ok {
		py.Virtualenv = v
	}
	switch opts["toolchain"] {
	case nil, "", "auto":
		py.Toolchain = toolchain.Auto
	case "pip":
		py.Toolchain = toolchain.Pip
	case "poetry":
		py.Toolchain = toolchain.Poetry
	case "uv":
		py.Toolchain = toolchain.Uv
	default:
		return nil, fmt.Errorf("unknown Python toolchain %q in Pulumi.yaml (pip, poetry or uv)", opts["toolchain"])
	}
	return toolchain.ResolveToolchain(py)
}

// The exec script reads these as a JSON object and a JSON list: never `null`.
func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// listPluginsPy prints the resource plugins declared by installed packages (pulumi_*/plugin.json).
const listPluginsPy = `
import importlib.metadata, json, pathlib
seen, out = set(), []
for dist in importlib.metadata.distributions():
    for f in dist.files or ():
        if f.name == "plugin.json" and len(f.parts) == 2:
            try:
                meta = json.loads(pathlib.Path(dist.locate_file(f)).read_text())
            except (OSError, ValueError):
                continue
            if meta.get("resource") and meta.get("name") and meta["name"] not in seen:
                seen.add(meta["name"])
                out.append({"name": meta["name"], "version": meta.get("version", ""), "server": meta.get("server", "")})
print(json.dumps(out))
`
