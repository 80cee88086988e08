package deploy

import (
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mattn/go-shellwords"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Cmd   string   // upper case: FROM, RUN, COPY, ...
	Flags []string // leading --name=value options (--from, --mount, --interval, ...)
	Args  string   // the rest
	Line  int      // where it starts, for messages
}

// parseDockerfile splits a Dockerfile into instructions. It knows what this
// repository's Dockerfile uses: comments (parser directives included), line
// continuations with a backslash, and leading --options.
func parseDockerfile(src string) ([]instruction, error) {
	var out []instruction
	var cur strings.Builder
	start := 0
	lines := strings.Split(src, "\n")
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue // comments may sit inside a continued instruction too
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(body)
			cur.WriteByte(' ')
			if i == len(lines)-1 {
				return nil, fmt.Errorf("line %d: continuation at the end of the file", start)
			}
			continue
		}
		cur.WriteString(trimmed)
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		cmd, rest, _ := strings.Cut(text, " ")
		ins := instruction{Cmd: strings.ToUpper(cmd), Line: start}
		rest = strings.TrimSpace(rest)
		for strings.HasPrefix(rest, "--") {
			flag, after, _ := strings.Cut(rest, " ")
			ins.Flags = append(ins.Flags, flag)
			rest = strings.TrimSpace(after)
		}
		ins.Args = rest
		out = append(out, ins)
	}
	return out, nil
}

func (ins instruction) flag(name string) (string, bool) {
	for _, f := range ins.Flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// goBuild is a `go build` command line split into its environment
// assignments and its words.
type goBuild struct {
	Env  map[string]string
	Args []string // "go", "build", flags..., package
}

// output returns the value of -o.
func (b goBuild) output() string {
	if i := slices.Index(b.Args, "-o"); i >= 0 && i+1 < len(b.Args) {
		return b.Args[i+1]
	}
	return ""
}

var envAssignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// splitCommand parses a shell command the way sh would split it, without
// expanding variables, and refuses lists (a && b, a; b), which would hide a
// second command from the comparison.
func splitCommand(line string) (goBuild, error) {
	p := shellwords.NewParser()
	words, err := p.Parse(line)
	if err != nil {
		return goBuild{}, err
	}
	if p.Position >= 0 {
		return goBuild{}, fmt.Errorf("%q holds more than one command; keep go build alone on its line", line)
	}
	b := goBuild{Env: map[string]string{}}
	for len(words) > 0 && envAssignment.MatchString(words[0]) {
		name, value, _ := strings.Cut(words[0], "=")
		b.Env[name] = value
		words = words[1:]
	}
	b.Args = words
	if len(b.Args) < 2 || b.Args[0] != "go" || b.Args[1] != "build" {
		return goBuild{}, fmt.Errorf("%q is not a go build command", line)
	}
	return b, nil
}

var (
	makeVariable = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)\s*(\?=|:=|=)\s*(.*)$`)
	makeRef      = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
)

// makeBuildCommand returns the recipe of the Makefile's build target with its
// variables expanded (their defaults: CI and the README run make without
// overrides).
func makeBuildCommand(makefile string) (goBuild, error) {
	vars := map[string]string{}
	var recipe []string
	inBuild := false
	for _, line := range strings.Split(makefile, "\n") {
		if inBuild {
			if strings.HasPrefix(line, "\t") {
				recipe = append(recipe, strings.TrimSpace(line))
				continue
			}
			inBuild = false
		}
		if m := makeVariable.FindStringSubmatch(line); m != nil {
			vars[m[1]] = strings.TrimSpace(m[3])
			continue
		}
		if target, _, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(target) == "build" {
			inBuild = true
		}
	}
	if len(recipe) != 1 {
		return goBuild{}, fmt.Errorf("the Makefile's build target has %d recipe lines, want 1", len(recipe))
	}
	line := recipe[0]
	for range 10 { // variables may refer to variables
		line = makeRef.ReplaceAllStringFunc(line, func(ref string) string {
			return vars[makeRef.FindStringSubmatch(ref)[1]]
		})
	}
	return splitCommand(line)
}

// compareBuilds lists how the Dockerfile's go build differs from the
// Makefile's. Allowed: the output path, and extra environment (GOOS and
// GOARCH for the target platform).
func compareBuilds(mk, docker goBuild) []string {
	var p []string
	for name, v := range mk.Env {
		if got, ok := docker.Env[name]; !ok || got != v {
			p = append(p, fmt.Sprintf("the Dockerfile's go build has %s=%q, the Makefile's %s=%q", name, got, name, v))
		}
	}
	for name := range docker.Env {
		if _, ok := mk.Env[name]; !ok && name != "GOOS" && name != "GOARCH" {
			p = append(p, fmt.Sprintf("the Dockerfile's go build sets %s, which the Makefile's does not", name))
		}
	}
	dockerArgs := slices.Clone(docker.Args)
	if i := slices.Index(dockerArgs, "-o"); i >= 0 && i+1 < len(dockerArgs) {
		dockerArgs[i+1] = mk.output() // the output path may differ
	}
	if !slices.Equal(dockerArgs, mk.Args) {
		p = append(p, fmt.Sprintf("the Dockerfile builds with %q, the Makefile with %q (output path aside)", docker.Args, mk.Args))
	}
	return p
}

// caBundlePath is where Debian (the golang image) keeps the CA certificates,
// and the first place Go looks for them on Linux.
const caBundlePath = "/etc/ssl/certs/ca-certificates.crt"

// dockerfile is what the checks need from the Dockerfile.
type dockerfile struct {
	build    goBuild
	user     string // USER of the runtime stage
	problems []string
}

// checkDockerfile returns the Dockerfile's go build and every way the file
// falls short: a builder on golang:1.26, a static build with the Makefile's
// flags, a scratch runtime with the CA bundle, a numeric non-root user, the
// binary as the exec-form entrypoint, and the health check.
func checkDockerfile(src string, mk goBuild) dockerfile {
	var d dockerfile
	add := func(format string, args ...any) { d.problems = append(d.problems, fmt.Sprintf(format, args...)) }
	ins, err := parseDockerfile(src)
	if err != nil {
		add("%v", err)
		return d
	}
	type stage struct {
		image, name string
		body        []instruction
	}
	var stages []*stage
	for _, in := range ins {
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			s := &stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if in.Cmd != "ARG" {
				add("line %d: %s before the first FROM", in.Line, in.Cmd)
			}
			continue
		}
		stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
	}
	if len(stages) < 2 {
		add("want a multi-stage build (a Go builder, then a minimal runtime); found %d stage(s)", len(stages))
		return d
	}
	builder, runtime := stages[0], stages[len(stages)-1]
	if builder.image != "golang:1.26" {
		add("the builder is %q, want golang:1.26 (the Go of go.mod and CI)", builder.image)
	}

	// The build: exactly one go build, with the Makefile's flags.
	var builds []goBuild
	for _, in := range builder.body {
		if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
			b, err := splitCommand(in.Args)
			if err != nil {
				add("line %d: %v", in.Line, err)
				continue
			}
			builds = append(builds, b)
		}
	}
	if len(builds) != 1 {
		add("the builder stage has %d go build commands, want 1", len(builds))
		return d
	}
	d.build = builds[0]
	d.problems = append(d.problems, compareBuilds(mk, d.build)...)
	if d.build.Env["CGO_ENABLED"] != "0" {
		add("CGO_ENABLED=%q: the runtime image has no libc, the binary must be static (CGO_ENABLED=0)", d.build.Env["CGO_ENABLED"])
	}

	// The runtime stage.
	if runtime.image != "scratch" {
		add("the runtime image is %q, want scratch (nothing but the binary and the CA bundle)", runtime.image)
	}
	var copied, caBundle, user, entrypoint, healthcheck, listenAddr, exposed string
	for _, in := range runtime.body {
		switch in.Cmd {
		case "COPY":
			from, _ := in.flag("from")
			f := strings.Fields(in.Args)
			if from != builder.name || len(f) != 2 {
				break
			}
			switch f[0] {
			case d.build.output():
				copied = f[1]
			case caBundlePath:
				caBundle = f[1]
			}
		case "USER":
			user = in.Args
		case "ENTRYPOINT":
			entrypoint = in.Args
		case "HEALTHCHECK":
			healthcheck = in.Args
		case "ENV":
			if v, ok := strings.CutPrefix(in.Args, "LISTEN_ADDR="); ok {
				listenAddr = v
			}
		case "EXPOSE":
			exposed = in.Args
		}
	}
	if copied == "" {
		add("the runtime stage does not COPY --from=%s the built binary %s", builder.name, d.build.output())
	}
	// Go's crypto/x509 reads this file first on Linux: without it a
	// rediss:// REDIS_URL fails every TLS handshake.
	if caBundle != caBundlePath {
		add("the runtime stage does not COPY --from=%s %s to the same path (TLS to Redis needs it)", builder.name, caBundlePath)
	}
	d.user = user
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		add("USER %q: want a numeric non-root uid, which Kubernetes' runAsNonRoot can verify", user)
	}
	var argv []string
	if err := json.Unmarshal([]byte(entrypoint), &argv); err != nil || len(argv) == 0 || argv[0] != copied {
		add("ENTRYPOINT %s: want the exec form [%q] (no shell in the image; SIGTERM must reach limiterd)", entrypoint, copied)
	}
	check, ok := strings.CutPrefix(healthcheck, "CMD ")
	if err := json.Unmarshal([]byte(strings.TrimSpace(check)), &argv); !ok || err != nil || !slices.Equal(argv, []string{copied, "-healthcheck"}) {
		add("HEALTHCHECK %q: want CMD [%q, \"-healthcheck\"]", healthcheck, copied)
	}
	if port, err := listenPort(listenAddr); err != nil || exposed != strconv.Itoa(port) {
		add("EXPOSE %q is not the port of ENV LISTEN_ADDR=%q", exposed, listenAddr)
	}
	return d
}

func readMakeBuild(t *testing.T) goBuild {
	t.Helper()
	makefile, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	mk, err := makeBuildCommand(string(makefile))
	if err != nil {
		t.Fatalf("Makefile: %v", err)
	}
	return mk
}

func readDockerfile(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	return string(src)
}

func TestDockerfileBuildsLikeTheMakefile(t *testing.T) {
	mk := readMakeBuild(t)
	t.Logf("Makefile build: %v %q", mk.Env, mk.Args)
	d := checkDockerfile(readDockerfile(t), mk)
	for _, p := range d.problems {
		t.Error(p)
	}
	t.Logf("Dockerfile build: %v %q", d.build.Env, d.build.Args)
}

// Each check must be able to fail.
func TestDockerfileChecksCatchMistakes(t *testing.T) {
	src := readDockerfile(t)
	mk := readMakeBuild(t)
	tests := []struct {
		name, old, new, want string
	}{
		{"flag dropped", "go build -trimpath -ldflags", "go build -ldflags", "the Dockerfile builds with"},
		{"other ldflags", "-ldflags '-s -w'", "-ldflags '-w'", "the Dockerfile builds with"},
		{"cgo on", "CGO_ENABLED=0 GOOS", "CGO_ENABLED=1 GOOS", "CGO_ENABLED"},
		{"extra env", "CGO_ENABLED=0 GOOS", "GOEXPERIMENT=x CGO_ENABLED=0 GOOS", "GOEXPERIMENT"},
		{"second command hidden", "./cmd/limiterd\n", "./cmd/limiterd && go build ./...\n", "more than one command"},
		{"other Go", "golang:1.26 AS build", "golang:1.25 AS build", "golang:1.26"},
		{"root runtime", "USER 65532:65532", "USER 0", "numeric non-root"},
		{"named user", "USER 65532:65532", "USER nonroot", "numeric non-root"},
		{"shell entrypoint", `ENTRYPOINT ["/limiterd"]`, "ENTRYPOINT /limiterd", "exec form"},
		{"fat runtime", "FROM scratch", "FROM debian:13", "runtime image"},
		{"no CA bundle", "COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n", "", "ca-certificates.crt"},
		{"no health check", `CMD ["/limiterd", "-healthcheck"]`, `CMD ["/limiterd"]`, "HEALTHCHECK"},
		{"port mismatch", "EXPOSE 8080", "EXPOSE 9090", "EXPOSE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(src, tc.old) {
				t.Fatalf("the Dockerfile no longer contains %q: update the test", tc.old)
			}
			d := checkDockerfile(strings.Replace(src, tc.old, tc.new, 1), mk)
			for _, p := range d.problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Fatalf("no problem mentions %q; got %q", tc.want, d.problems)
		})
	}
}

// The Makefile parse must follow a change of the build target, or the
// comparison above would hold the Dockerfile to a stale command.
func TestMakeBuildCommandFollowsTheMakefile(t *testing.T) {
	makefile, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(makefile), "LDFLAGS ?= -s -w", "LDFLAGS ?= -s -w -X main.version=1", 1)
	if changed == string(makefile) {
		t.Fatal("the Makefile no longer sets LDFLAGS ?= -s -w: update the test")
	}
	mk, err := makeBuildCommand(changed)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.Index(mk.Args, "-ldflags"); i < 0 || mk.Args[i+1] != "-s -w -X main.version=1" {
		t.Fatalf("makeBuildCommand = %q, want -ldflags '-s -w -X main.version=1'", mk.Args)
	}
	if p := compareBuilds(mk, checkDockerfile(readDockerfile(t), readMakeBuild(t)).build); len(p) == 0 {
		t.Fatal("a Makefile with other ldflags still matched the Dockerfile")
	}
}

// Build the binary as the image's builder would: from a copy of the
// repository filtered by Dockerfile.dockerignore (with the matcher that docker
// and BuildKit use), with the Dockerfile's own go build command. This catches
// an ignore rule that drops a file the build needs, and proves the binary is
// static and stripped, as the scratch image requires.
func TestDockerBuildContextBuildsAStaticBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles limiterd (tens of seconds on two cores); skipped with -short")
	}
	d := checkDockerfile(readDockerfile(t), readMakeBuild(t))
	if len(d.problems) > 0 {
		t.Fatalf("the Dockerfile has problems (see TestDockerfileBuildsLikeTheMakefile): %q", d.problems)
	}
	ctxDir := buildContext(t, repoRoot, "Dockerfile.dockerignore")
	for _, f := range []string{"go.mod", "go.sum"} { // COPY go.mod go.sum ./
		if _, err := os.Stat(filepath.Join(ctxDir, f)); err != nil {
			t.Fatalf("the build context lacks %s: %v", f, err)
		}
	}

	bin := filepath.Join(t.TempDir(), "limiterd")
	args := slices.Clone(d.build.Args)
	args[slices.Index(args, "-o")+1] = bin
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, args[1:]...)
	cmd.Dir = ctxDir
	// As in the golang image: this Go only, no GOFLAGS of the developer's.
	cmd.Env = append(withoutEnv(os.Environ(), "GOFLAGS", "GOOS", "GOARCH", "CGO_ENABLED"), "GOTOOLCHAIN=local")
	targets := map[string]string{"TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH}
	for name, v := range d.build.Env {
		cmd.Env = append(cmd.Env, name+"="+os.Expand(v, func(k string) string { return targets[k] }))
	}
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s (in the filtered context): %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("built in %v", time.Since(start).Round(time.Second))

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is dynamically linked (%v): the scratch image has no libc", prog.Type)
		}
	}
	if f.Section(".symtab") != nil {
		t.Error("the binary has a symbol table: -ldflags -s was not applied")
	}

	// The binary starts: -h prints the settings and exits 0.
	out, err := exec.CommandContext(ctx, bin, "-h").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "LISTEN_ADDR") {
		t.Fatalf("%s -h: %v\n%s", bin, err, out)
	}
}

// buildContext copies root into a temporary directory, leaving out what the
// ignore file excludes, as the docker CLI and BuildKit do.
func buildContext(t *testing.T, root, ignoreFile string) string {
	t.Helper()
	f, err := os.Open(ignoreFile)
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf("%s: %v", ignoreFile, err)
	}
	dst := t.TempDir()
	var copied int
	err = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		excluded, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		if excluded {
			if e.IsDir() && !pm.Exclusions() { // no "!" rule can bring a child back
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !e.Type().IsRegular() {
			return nil
		}
		copied++
		return copyFile(path, target)
	})
	if err != nil {
		t.Fatalf("copying the build context: %v", err)
	}
	t.Logf("build context: %d files", copied)
	return dst
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func withoutEnv(env []string, names ...string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return slices.Contains(names, name)
	})
}

// The context filter itself: what must stay out, and what must go in.
func TestDockerIgnoreKeepsSecretsAndJunkOut(t *testing.T) {
	f, err := os.Open("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path     string
		excluded bool
	}{
		{".git/config", true},
		{"bin/limiterd", true},
		{".env", true},
		{"cmd/limiterd/.env.local", true},
		{"deploy/k8s/secret.example.yaml", true},
		{"httpapi/httpapi.test", true},
		{"README.md", true},
		{"go.mod", false},
		{"go.sum", false},
		{"cmd/limiterd/main.go", false},
		{"scripts/acquire.lua", false},
		{"newpkg/added/later.go", false}, // a deny-list lets new packages in
	}
	for _, tc := range tests {
		got, err := pm.MatchesOrParentMatches(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.excluded {
			t.Errorf("%s: excluded = %v, want %v", tc.path, got, tc.excluded)
		}
	}
}

// The image's user is the one the Deployment and the compose file run as:
// with another runAsUser the image's files would still be readable (they are
// world-readable), but the three would no longer describe one process.
func TestImageUserIsTheDeploymentsAndComposes(t *testing.T) {
	d := checkDockerfile(readDockerfile(t), readMakeBuild(t))
	uidText, gidText, _ := strings.Cut(d.user, ":")
	uid, err := strconv.ParseInt(uidText, 10, 64)
	if err != nil {
		t.Fatalf("Dockerfile USER %q: %v", d.user, err)
	}
	psc := loadManifests(t).Deployment.Spec.Template.Spec.SecurityContext
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != uid {
		t.Errorf("the Deployment's runAsUser is not the image's uid %d", uid)
	}
	if gid, err := strconv.ParseInt(gidText, 10, 64); err == nil && (psc == nil || psc.RunAsGroup == nil || *psc.RunAsGroup != gid) {
		t.Errorf("the Deployment's runAsGroup is not the image's gid %d", gid)
	}
	p, err := loadCompose(t, readCompose(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range limiterdServices(p) {
		if s.User != d.user {
			t.Errorf("%s runs as %q, the image as %q", s.Name, s.User, d.user)
		}
	}
}
