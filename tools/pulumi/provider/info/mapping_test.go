package info

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfgen"
	shim "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag/colors"
)

// testdata/reference-shape.json is the pulumi-postgresql 3.18-line schema
// (pulumi/pulumi-postgresql@346d9a0 provider/cmd/pulumi-resource-postgresql/schema.json)
// with every "description" removed: config, provider, resources, functions, types.
type refSchema struct {
	Config struct {
		Variables map[string]json.RawMessage `json:"variables"`
	} `json:"config"`
	Provider  map[string]json.RawMessage `json:"provider"`
	Resources map[string]struct {
		Properties      map[string]json.RawMessage `json:"properties"`
		InputProperties map[string]json.RawMessage `json:"inputProperties"`
	} `json:"resources"`
	Functions map[string]struct {
		Inputs struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"inputs"`
		Outputs struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"outputs"`
	} `json:"functions"`
}

func loadRef(t *testing.T) (refSchema, map[string]any) {
	t.Helper()
	b, err := os.ReadFile("testdata/reference-shape.json")
	if err != nil {
		t.Fatal(err)
	}
	var r refSchema
	var raw map[string]any
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	return r, raw
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// pulumiNames maps every TF attribute of sm to its Pulumi name with the
// bridge's own naming function (the one tfgen and the runtime use).
// inputsOnly drops pure computed attributes (outputs only).
func pulumiNames(sm shim.SchemaMap, fields map[string]*tfbridge.SchemaInfo, inputsOnly bool) []string {
	var out []string
	sm.Range(func(k string, s shim.Schema) bool {
		if k == "id" || (inputsOnly && s.Computed() && !s.Optional() && !s.Required()) {
			return true
		}
		out = append(out, tfbridge.TerraformToPulumiNameV2(k, sm, fields))
		return true
	})
	sort.Strings(out)
	return out
}

func sameSet(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: property names differ\n  ours:      %v\n  reference: %v", what, got, want)
	}
}

// TestTokensAndNames: every resource, data source and config key of the
// reference schema is mapped by our ProviderInfo to the same token and the
// same set of Pulumi property names, and we map nothing extra.
func TestTokensAndNames(t *testing.T) {
	ref, _ := loadRef(t)
	p := Provider()

	// resources: token -> TF name, from our ProviderInfo
	resByTok := map[string]string{}
	for tf, ri := range p.Resources {
		if prev, dup := resByTok[ri.Tok.String()]; dup {
			t.Errorf("token %s mapped twice (%s, %s)", ri.Tok, prev, tf)
		}
		resByTok[ri.Tok.String()] = tf
	}
	sameSet(t, "resource tokens", keys(resByTok), keys(ref.Resources))
	for tok, rr := range ref.Resources {
		tf, ok := resByTok[tok]
		if !ok {
			continue
		}
		r, ok := p.P.ResourcesMap().GetOk(tf)
		if !ok {
			t.Errorf("%s: TF resource %s not in the upstream provider", tok, tf)
			continue
		}
		fields := p.Resources[tf].Fields
		sameSet(t, tok+" outputs", pulumiNames(r.Schema(), fields, false), keys(rr.Properties))
		sameSet(t, tok+" inputs", pulumiNames(r.Schema(), fields, true), keys(rr.InputProperties))
	}

	// data sources -> functions (the bridge adds terraformConfig itself)
	dsByTok := map[string]string{}
	for tf, di := range p.DataSources {
		dsByTok[di.Tok.String()] = tf
	}
	wantFns := []string{}
	for tok := range ref.Functions {
		if !strings.HasPrefix(tok, "pulumi:providers:") {
			wantFns = append(wantFns, tok)
		}
	}
	sort.Strings(wantFns)
	sameSet(t, "data source tokens", keys(dsByTok), wantFns)
	for _, tok := range wantFns {
		tf, ok := dsByTok[tok]
		if !ok {
			continue
		}
		d := p.P.DataSourcesMap().Get(tf)
		fields := p.DataSources[tf].Fields
		sameSet(t, tok+" inputs", pulumiNames(d.Schema(), fields, true), keys(ref.Functions[tok].Inputs.Properties))
		outs := append(pulumiNames(d.Schema(), fields, false), "id")
		sort.Strings(outs)
		sameSet(t, tok+" outputs", outs, keys(ref.Functions[tok].Outputs.Properties))
	}

	// runtime-only flags that the schema does not show
	if !p.Resources["postgresql_grant"].DeleteBeforeReplace {
		t.Error("postgresql_grant must be DeleteBeforeReplace (as in pulumi-postgresql)")
	}

	// provider configuration keys
	sameSet(t, "config keys", pulumiNames(p.P.Schema(), p.Config, false), keys(ref.Config.Variables))
}

// TestGeneratedSchemaShape: the schema tfgen generates from our ProviderInfo
// (the one build.sh embeds) equals the reference schema in everything but the
// descriptions: tokens, property names, types, required lists, defaults,
// replace-on-change flags, secrets, deprecations, aliases.
func TestGeneratedSchemaShape(t *testing.T) {
	_, want := loadRef(t)
	// tfgen warnings (docs it drops) are not what this test is about
	sink := diag.DefaultSink(io.Discard, io.Discard, diag.FormatOptions{Color: colors.Never})
	res, err := tfgen.GenerateSchemaWithOptions(tfgen.GenerateSchemaOptions{
		ProviderInfo: Provider(), DiagnosticsSink: sink, XInMemoryDocs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(res.PackageSpec)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	var diffs, markup []string
	for _, sec := range []string{"config", "provider", "resources", "functions", "types"} {
		diff("/"+sec, stripDescriptions(got[sec]), want[sec], &diffs)
	}
	// Known, accepted difference: deprecation messages are doc text, rendered by
	// bridge v3.136 (reference) with an extra pulumi-lang-hcl span; v3.120 has none.
	// Both sides must have one; the wording is not compared.
	diffs = slices.DeleteFunc(diffs, func(d string) bool {
		if strings.Contains(d, "/deprecationMessage: ours ") {
			markup = append(markup, d[:strings.Index(d, ": ours ")])
			return true
		}
		return false
	})
	if len(markup) > 0 {
		t.Logf("deprecationMessage text differs (doc markup only) at %d place(s): %s", len(markup), strings.Join(markup, ", "))
	}
	if len(diffs) > 0 {
		t.Errorf("generated schema differs from the reference in %d place(s):\n  %s", len(diffs), strings.Join(diffs, "\n  "))
	}
}

func stripDescriptions(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			if k != "description" {
				out[k] = stripDescriptions(x)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = stripDescriptions(x)
		}
		return out
	}
	return v
}

func diff(path string, got, want any, out *[]string) {
	gm, gok := got.(map[string]any)
	wm, wok := want.(map[string]any)
	if gok && wok {
		for _, k := range keys(wm) {
			if _, ok := gm[k]; !ok {
				*out = append(*out, fmt.Sprintf("%s/%s: missing in ours", path, k))
				continue
			}
			diff(path+"/"+k, gm[k], wm[k], out)
		}
		for _, k := range keys(gm) {
			if _, ok := wm[k]; !ok {
				*out = append(*out, fmt.Sprintf("%s/%s: extra in ours", path, k))
			}
		}
		return
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		*out = append(*out, fmt.Sprintf("%s: ours %s, reference %s", path, g, w))
	}
}
