package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const k8sDir = "k8s"

// manifests holds the objects of k8s/, one of each kind.
type manifests struct {
	ConfigMap  *corev1.ConfigMap
	Secret     *corev1.Secret
	Deployment *appsv1.Deployment
	Service    *corev1.Service
	PDB        *policyv1.PodDisruptionBudget
	HPA        *autoscalingv2.HorizontalPodAutoscaler
}

// deepCopy lets a test break one copy without touching the others.
func (m manifests) deepCopy() manifests {
	return manifests{
		ConfigMap:  m.ConfigMap.DeepCopy(),
		Secret:     m.Secret.DeepCopy(),
		Deployment: m.Deployment.DeepCopy(),
		Service:    m.Service.DeepCopy(),
		PDB:        m.PDB.DeepCopy(),
		HPA:        m.HPA.DeepCopy(),
	}
}

var errUnknownKind = errors.New("kind not expected in deploy/k8s")

// newObject returns an empty value of the real API type of apiVersion and
// kind. Only the kinds and versions deploy/k8s means to use are accepted: a
// deprecated version (autoscaling/v1, policy/v1beta1) is an error too.
func newObject(tm metav1.TypeMeta) (any, error) {
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	}
	return nil, fmt.Errorf("%w: apiVersion %q, kind %q", errUnknownKind, tm.APIVersion, tm.Kind)
}

// decodeStrict decodes every YAML document of data into the real API types.
// Strict as the API server's field validation is: an unknown field, a field
// given twice, or a value of the wrong type (a bad resource quantity, say) is
// an error. Names and labels are checked with the API's own validators.
func decodeStrict(data []byte) ([]any, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []any
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("reading apiVersion and kind: %w", err)
		}
		obj, err := newObject(tm)
		if err != nil {
			return nil, err
		}
		if err := unmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s: %w", tm.Kind, err)
		}
		if err := validateMeta(obj.(metav1.Object)); err != nil {
			return nil, fmt.Errorf("%s: %w", tm.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// unmarshalStrict decodes YAML as the API server decodes a request with
// strict field validation: a key given twice, an unknown field, or a field in
// the wrong case is an error. sigs.k8s.io/yaml's own UnmarshalStrict uses
// encoding/json, which matches field names regardless of case, so it takes
// readOnlyRootFileSystem for readOnlyRootFilesystem; sigs.k8s.io/json, the API
// server's decoder, does not.
func unmarshalStrict(doc []byte, obj any) error {
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(data, obj)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// stripComments drops whole-line comments, so that a document of comments
// only counts as empty.
func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

func validateMeta(o metav1.Object) error {
	var errs []string
	errs = append(errs, validation.IsDNS1123Subdomain(o.GetName())...)
	for k, v := range o.GetLabels() {
		errs = append(errs, validation.IsQualifiedName(k)...)
		errs = append(errs, validation.IsValidLabelValue(v)...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("metadata of %q: %s", o.GetName(), strings.Join(errs, "; "))
	}
	return nil
}

// manifestFiles lists the object files of k8s/ (every .yaml but the
// kustomization).
func manifestFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yaml" })
	if len(files) == 0 {
		t.Fatalf("no manifests in %s", k8sDir)
	}
	return files
}

// loadManifests decodes every file of k8s/ strictly and sorts the objects by
// kind; two objects of one kind are an error (the checks compare pairs).
func loadManifests(t *testing.T) manifests {
	t.Helper()
	var m manifests
	for _, file := range manifestFiles(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeStrict(data)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, obj := range objs {
			var dup bool
			switch o := obj.(type) {
			case *corev1.ConfigMap:
				dup, m.ConfigMap = m.ConfigMap != nil, o
			case *corev1.Secret:
				dup, m.Secret = m.Secret != nil, o
			case *corev1.Service:
				dup, m.Service = m.Service != nil, o
			case *appsv1.Deployment:
				dup, m.Deployment = m.Deployment != nil, o
			case *policyv1.PodDisruptionBudget:
				dup, m.PDB = m.PDB != nil, o
			case *autoscalingv2.HorizontalPodAutoscaler:
				dup, m.HPA = m.HPA != nil, o
			}
			if dup {
				t.Fatalf("%s: a second %T; the checks expect one of each kind", file, obj)
			}
		}
	}
	if m.ConfigMap == nil || m.Secret == nil || m.Deployment == nil || m.Service == nil || m.PDB == nil || m.HPA == nil {
		t.Fatalf("%s must hold a ConfigMap, a Secret, a Deployment, a Service, a PodDisruptionBudget and a HorizontalPodAutoscaler", k8sDir)
	}
	return m
}

func TestManifestsDecodeStrictlyIntoAPITypes(t *testing.T) {
	for _, file := range manifestFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := decodeStrict(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) == 0 {
				t.Fatal("no object in the file")
			}
		})
	}
}

// The decoder must refuse what the API server would: these are mistakes a
// hand-written manifest makes.
func TestDecodeStrictRefusesMistakes(t *testing.T) {
	deployment, err := os.ReadFile(filepath.Join(k8sDir, "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"misspelt field", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", "unknown field"},
		{"field in the wrong case", "successThreshold: 1", "SuccessThreshold: 1", "unknown field"},
		{"field at the wrong level", "      terminationGracePeriodSeconds: 30", "      terminationGracePeriod: 30", "unknown field"},
		{"field given twice", "          imagePullPolicy: IfNotPresent", "          imagePullPolicy: IfNotPresent\n          imagePullPolicy: Always", "already set"},
		{"bad quantity", "memory: 64Mi", "memory: 64MB-ish", "quantities must match"},
		{"wrong type", "timeoutSeconds: 2", "timeoutSeconds: two", "cannot unmarshal"},
		{"deprecated version", "apiVersion: apps/v1", "apiVersion: extensions/v1beta1", errUnknownKind.Error()},
		{"invalid label value", "app.kubernetes.io/component: server", "app.kubernetes.io/component: server side", "consist of alphanumeric"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(deployment, []byte(tc.old)) {
				t.Fatalf("deployment.yaml no longer contains %q: update the test", tc.old)
			}
			broken := bytes.Replace(deployment, []byte(tc.old), []byte(tc.new), 1)
			_, err := decodeStrict(broken)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decodeStrict = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// kustomization is the part of a Kustomization that deploy/k8s uses; strict
// decoding makes any other field an error, so that one added later gets a
// look (and a field here).
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// `kubectl apply -k deploy/k8s` must apply every manifest but the Secret
// example, whose placeholders would overwrite the real Secret.
func TestKustomizationListsEveryManifestButTheSecretExample(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := unmarshalStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is %s %s, want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind)
	}
	var want []string
	for _, f := range manifestFiles(t) {
		if base := filepath.Base(f); base != "secret.example.yaml" {
			want = append(want, base)
		}
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources = %v, want %v", got, want)
	}
}

func TestManifestsHangTogether(t *testing.T) {
	m := loadManifests(t)
	for _, p := range checkManifests(m, knownSettings(t)) {
		t.Error(p)
	}
}

// Each check must be able to fail: break one thing in a copy of the real
// manifests and expect that check's complaint.
func TestManifestChecksCatchMistakes(t *testing.T) {
	base := loadManifests(t)
	known := knownSettings(t)
	container := func(m manifests) *corev1.Container { return &m.Deployment.Spec.Template.Spec.Containers[0] }
	tests := []struct {
		name   string
		mutate func(m manifests)
		want   string
	}{
		{"readiness on /healthz", func(m manifests) {
			container(m).ReadinessProbe.HTTPGet.Path = "/healthz"
		}, "readiness probe path"},
		{"liveness on /readyz", func(m manifests) {
			container(m).LivenessProbe.HTTPGet.Path = "/readyz"
		}, "liveness probe path"},
		{"probe on another port", func(m manifests) {
			container(m).ReadinessProbe.HTTPGet.Port = intstr.FromInt32(9090)
		}, "not a port of the container"},
		{"probe on an unknown port name", func(m manifests) {
			container(m).LivenessProbe.HTTPGet.Port = intstr.FromString("metrics")
		}, "not a port of the container"},
		{"container port not LISTEN_ADDR's", func(m manifests) {
			m.ConfigMap.Data["LISTEN_ADDR"] = ":9000"
		}, "LISTEN_ADDR"},
		{"grace period too short", func(m manifests) {
			m.ConfigMap.Data["SHUTDOWN_TIMEOUT"] = "30s"
		}, "terminationGracePeriodSeconds"},
		{"no preStop sleep", func(m manifests) {
			container(m).Lifecycle = nil
		}, "preStop"},
		{"readiness timeout below REDIS_TIMEOUT", func(m manifests) {
			m.ConfigMap.Data["REDIS_TIMEOUT"] = "3s"
		}, "readiness probe timeout"},
		{"writable root filesystem", func(m manifests) {
			container(m).SecurityContext.ReadOnlyRootFilesystem = nil
		}, "readOnlyRootFilesystem"},
		{"may run as root", func(m manifests) {
			m.Deployment.Spec.Template.Spec.SecurityContext.RunAsNonRoot = nil
			container(m).SecurityContext.RunAsNonRoot = nil
		}, "runAsNonRoot"},
		{"runs as uid 0", func(m manifests) {
			m.Deployment.Spec.Template.Spec.SecurityContext.RunAsUser = new(int64)
		}, "runAsUser"},
		{"capabilities kept", func(m manifests) {
			container(m).SecurityContext.Capabilities.Drop = []corev1.Capability{"NET_RAW"}
		}, "drop ALL"},
		{"privilege escalation", func(m manifests) {
			container(m).SecurityContext.AllowPrivilegeEscalation = nil
		}, "allowPrivilegeEscalation"},
		{"no seccomp profile", func(m manifests) {
			m.Deployment.Spec.Template.Spec.SecurityContext.SeccompProfile = nil
		}, "seccomp"},
		{"Service selects other pods", func(m manifests) {
			m.Service.Spec.Selector["app.kubernetes.io/component"] = "worker"
		}, "Service selector"},
		{"PDB selects other pods", func(m manifests) {
			m.PDB.Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "other"
		}, "PodDisruptionBudget selector"},
		{"selector misses the pod labels", func(m manifests) {
			m.Deployment.Spec.Selector.MatchLabels["tier"] = "web"
		}, "does not select its own pod template"},
		{"HPA scales another Deployment", func(m manifests) {
			m.HPA.Spec.ScaleTargetRef.Name = "limiterd-old"
		}, "HorizontalPodAutoscaler targets"},
		{"HPA min of one", func(m manifests) {
			m.HPA.Spec.MinReplicas = new(int32)
			*m.HPA.Spec.MinReplicas = 1
		}, "minReplicas"},
		{"replicas fights the HPA", func(m manifests) {
			m.Deployment.Spec.Replicas = new(int32)
			*m.Deployment.Spec.Replicas = 2
		}, "spec.replicas"},
		{"no CPU request for the HPA", func(m manifests) {
			delete(container(m).Resources.Requests, corev1.ResourceCPU)
		}, "CPU request"},
		{"unknown setting", func(m manifests) {
			m.ConfigMap.Data["STREAM_LIMITS"] = "3"
		}, "not a limiterd setting"},
		{"setting left out", func(m manifests) {
			delete(m.ConfigMap.Data, "LEASE_TTL")
		}, "LEASE_TTL is in no"},
		{"invalid setting value", func(m manifests) {
			m.ConfigMap.Data["STREAM_LIMIT"] = "0"
		}, "STREAM_LIMIT"},
		{"REDIS_URL in the ConfigMap", func(m manifests) {
			m.ConfigMap.Data["REDIS_URL"] = "redis://r:6379/0"
		}, "belongs in the Secret"},
		{"REDIS_URL optional", func(m manifests) {
			for i := range container(m).Env {
				if container(m).Env[i].Name == "REDIS_URL" {
					container(m).Env[i].ValueFrom.SecretKeyRef.Optional = new(bool)
					*container(m).Env[i].ValueFrom.SecretKeyRef.Optional = true
				}
			}
		}, "REDIS_URL must come"},
		{"ConfigMap not loaded", func(m manifests) {
			container(m).EnvFrom = nil
		}, "envFrom"},
		{"Service targets another port", func(m manifests) {
			m.Service.Spec.Ports[0].TargetPort = intstr.FromInt32(9090)
		}, "Service port"},
		{"metrics annotation on another port", func(m manifests) {
			m.Deployment.Spec.Template.Annotations["prometheus.io/port"] = "9090"
		}, "prometheus.io/port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := base.deepCopy()
			tc.mutate(m)
			problems := checkManifests(m, known)
			for _, p := range problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Fatalf("no problem mentions %q; got %q", tc.want, problems)
		})
	}
}

// checkManifests returns every way in which the objects do not fit together
// or fall short of how limiterd must run.
func checkManifests(m manifests, known map[string]bool) []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	d := m.Deployment
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		add("the Deployment has %d containers, want 1 (limiterd)", len(pod.Containers))
		return p
	}
	c := pod.Containers[0]

	// Labels and selectors: the Deployment selects its pods, and the Service,
	// the PDB and the HPA all reach exactly those.
	sel := d.Spec.Selector
	if sel == nil || len(sel.MatchLabels) == 0 || len(sel.MatchExpressions) > 0 {
		add("the Deployment's selector must be matchLabels only")
		return p
	}
	if !subset(sel.MatchLabels, d.Spec.Template.Labels) {
		add("the Deployment's selector %v does not select its own pod template %v", sel.MatchLabels, d.Spec.Template.Labels)
	}
	if !maps.Equal(m.Service.Spec.Selector, sel.MatchLabels) {
		add("Service selector %v, want the Deployment's %v", m.Service.Spec.Selector, sel.MatchLabels)
	}
	if ps := m.PDB.Spec.Selector; ps == nil || len(ps.MatchExpressions) > 0 || !maps.Equal(ps.MatchLabels, sel.MatchLabels) {
		add("PodDisruptionBudget selector %v, want the Deployment's %v", ps, sel.MatchLabels)
	}
	if ref := m.HPA.Spec.ScaleTargetRef; ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != d.Name {
		add("the HorizontalPodAutoscaler targets %s %s %q, want apps/v1 Deployment %q", ref.APIVersion, ref.Kind, ref.Name, d.Name)
	}
	for _, tsc := range pod.TopologySpreadConstraints {
		if tsc.LabelSelector == nil || !maps.Equal(tsc.LabelSelector.MatchLabels, sel.MatchLabels) {
			add("topology spread constraint on %s selects %v, want the Deployment's %v", tsc.TopologyKey, tsc.LabelSelector, sel.MatchLabels)
		}
	}

	// Replicas: the HPA owns the count; at least two, so one pod lost or
	// drained leaves one serving.
	if d.Spec.Replicas != nil {
		add("the Deployment sets spec.replicas (%d): every kubectl apply would undo the HPA's count; leave it to minReplicas", *d.Spec.Replicas)
	}
	if m.HPA.Spec.MinReplicas == nil || *m.HPA.Spec.MinReplicas < 2 {
		add("HPA minReplicas must be at least 2")
	} else if m.HPA.Spec.MaxReplicas < *m.HPA.Spec.MinReplicas {
		add("HPA maxReplicas %d is below minReplicas %d", m.HPA.Spec.MaxReplicas, *m.HPA.Spec.MinReplicas)
	}
	var cpuMetric bool
	for _, metric := range m.HPA.Spec.Metrics {
		if metric.Type == autoscalingv2.ResourceMetricSourceType && metric.Resource != nil && metric.Resource.Name == corev1.ResourceCPU {
			cpuMetric = true
		}
	}
	if !cpuMetric {
		add("the HPA has no CPU resource metric")
	}
	// Utilization is a share of the request: without one the HPA cannot act.
	if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
		add("the container has no CPU request, which the HPA's CPU utilization needs")
	}
	if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
		add("the container has no memory request")
	}
	if m.PDB.Spec.MaxUnavailable == nil && m.PDB.Spec.MinAvailable == nil {
		add("the PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
	}

	// Settings: the ConfigMap is loaded whole, holds only known settings,
	// and, with the Secret, all of them.
	env := map[string]string{}
	var fromConfigMap bool
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == m.ConfigMap.Name && ef.Prefix == "" {
			fromConfigMap = true
			for k, v := range m.ConfigMap.Data {
				env[k] = v
			}
		}
	}
	if !fromConfigMap {
		add("the container does not load ConfigMap %q through envFrom", m.ConfigMap.Name)
	}
	for k := range m.ConfigMap.Data {
		if !known[k] {
			add("ConfigMap key %s is not a limiterd setting (README's table or comingSettings)", k)
		}
		if slices.Contains(secretSettings, k) {
			add("ConfigMap key %s belongs in the Secret: it may hold a password", k)
		}
		for _, e := range validation.IsEnvVarName(k) {
			add("ConfigMap key %s: %s", k, e)
		}
	}
	for name := range known {
		if _, ok := m.ConfigMap.Data[name]; !ok && settingsElsewhere[name] == "" {
			add("setting %s is in no ConfigMap key: set it, or say in settingsElsewhere why not", name)
		}
	}
	for _, e := range c.Env {
		if e.Value != "" {
			env[e.Name] = e.Value // an explicit value overrides the ConfigMap
		}
	}
	for _, problem := range checkSettingValues(env) {
		add("ConfigMap: %s", problem)
	}
	var redisURL bool
	for _, e := range c.Env {
		if e.Name != "REDIS_URL" {
			continue
		}
		ref := e.ValueFrom
		if ref != nil && ref.SecretKeyRef != nil && ref.SecretKeyRef.Name == m.Secret.Name &&
			(ref.SecretKeyRef.Optional == nil || !*ref.SecretKeyRef.Optional) {
			redisURL = true
			if _, ok := m.Secret.StringData[ref.SecretKeyRef.Key]; !ok {
				add("the Secret example has no key %s for REDIS_URL", ref.SecretKeyRef.Key)
			}
		}
	}
	if !redisURL {
		add("REDIS_URL must come from Secret %q and not be optional: without it each pod runs an embedded Redis of its own", m.Secret.Name)
	}

	// Ports: LISTEN_ADDR's port is the container port that the probes, the
	// Service and the metrics annotation use.
	port, err := listenPort(env["LISTEN_ADDR"])
	if err != nil {
		add("LISTEN_ADDR %q: %v", env["LISTEN_ADDR"], err)
	}
	var http *corev1.ContainerPort
	for i := range c.Ports {
		if int(c.Ports[i].ContainerPort) == port {
			http = &c.Ports[i]
		}
	}
	if http == nil {
		add("no container port is LISTEN_ADDR's port %d", port)
		return p
	}
	resolves := func(ip intstr.IntOrString) bool {
		if ip.Type == intstr.String {
			return ip.StrVal != "" && ip.StrVal == http.Name
		}
		return ip.IntVal == http.ContainerPort
	}
	probe := func(kind string, pr *corev1.Probe, path string) {
		switch {
		case pr == nil || pr.HTTPGet == nil:
			add("%s probe: want an httpGet on %s", kind, path)
		case pr.HTTPGet.Path != path:
			add("%s probe path %q, want %s", kind, pr.HTTPGet.Path, path)
		case !resolves(pr.HTTPGet.Port):
			add("%s probe port %s is not a port of the container serving LISTEN_ADDR (%d)", kind, pr.HTTPGet.Port.String(), port)
		}
	}
	probe("readiness", c.ReadinessProbe, "/readyz")
	probe("liveness", c.LivenessProbe, "/healthz")
	// /readyz answers within REDIS_TIMEOUT (plus a little) even when Redis
	// hangs; a probe timeout below that would turn a slow Redis into an
	// unready pod for the wrong reason.
	if r := c.ReadinessProbe; r != nil {
		if timeout := time.Duration(r.TimeoutSeconds) * time.Second; timeout <= duration(env, "REDIS_TIMEOUT", 500*time.Millisecond) {
			add("readiness probe timeout %v must exceed REDIS_TIMEOUT %v", timeout, duration(env, "REDIS_TIMEOUT", 500*time.Millisecond))
		}
	}
	for _, sp := range m.Service.Spec.Ports {
		if !resolves(sp.TargetPort) {
			add("Service port %s targets %s, not the container's port %d", sp.Name, sp.TargetPort.String(), port)
		}
	}
	if a, ok := d.Spec.Template.Annotations["prometheus.io/port"]; ok && a != fmt.Sprint(port) {
		add("annotation prometheus.io/port %q is not the container port %d", a, port)
	}

	// Shutdown: preStop sleeps while the endpoint's removal spreads, then
	// SIGTERM starts a drain of up to SHUTDOWN_TIMEOUT; the grace period,
	// counted from the start of preStop, must cover both.
	var preStop time.Duration
	if l := c.Lifecycle; l == nil || l.PreStop == nil || l.PreStop.Sleep == nil || l.PreStop.Sleep.Seconds <= 0 {
		add("no preStop sleep: the pod would stop accepting before its endpoint is removed everywhere")
	} else {
		preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	grace := 30 * time.Second // Kubernetes' default
	if pod.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	}
	if shutdown := duration(env, "SHUTDOWN_TIMEOUT", 15*time.Second); grace <= preStop+shutdown {
		add("terminationGracePeriodSeconds %v must exceed the preStop sleep %v plus SHUTDOWN_TIMEOUT %v", grace, preStop, shutdown)
	}

	// Hardening.
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	csc := c.SecurityContext
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	isTrue := func(b *bool) bool { return b != nil && *b }
	isFalse := func(b *bool) bool { return b != nil && !*b }
	if !(isTrue(psc.RunAsNonRoot) || isTrue(csc.RunAsNonRoot)) || isFalse(csc.RunAsNonRoot) {
		add("runAsNonRoot must be true")
	}
	for _, uid := range []*int64{psc.RunAsUser, csc.RunAsUser} {
		if uid != nil && *uid == 0 {
			add("runAsUser 0 is root")
		}
	}
	if !isTrue(csc.ReadOnlyRootFilesystem) {
		add("readOnlyRootFilesystem must be true")
	}
	if !isFalse(csc.AllowPrivilegeEscalation) {
		add("allowPrivilegeEscalation must be false")
	}
	if csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") || len(csc.Capabilities.Add) > 0 {
		add("capabilities must drop ALL and add none")
	}
	seccomp := psc.SeccompProfile
	if csc.SeccompProfile != nil {
		seccomp = csc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		add("seccomp profile must be RuntimeDefault")
	}
	return p
}

// subset reports whether every label of sub is in set with the same value.
func subset(sub, set map[string]string) bool {
	for k, v := range sub {
		if w, ok := set[k]; !ok || w != v {
			return false
		}
	}
	return true
}
