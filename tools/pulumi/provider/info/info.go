// Package info maps cyrilgdn/terraform-provider-postgresql onto the Pulumi
// package "postgresql" with the tokens and property names of pulumi-postgresql 3.18.x
// (checked against that schema by mapping_test.go).
package info

import (
	"github.com/cyrilgdn/terraform-provider-postgresql/postgresql"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
)

// Version is the plugin version this binary reports; build.sh sets it with -ldflags -X.
var Version = "0.0.0-dev"

// UpstreamRepoPath is where tfgen reads the upstream docs (website/docs); build.sh runs
// tfgen from the wrapper directory, where ./upstream is the verified upstream copy.
var UpstreamRepoPath = "./upstream"

// Provider returns the bridge's ProviderInfo.
func Provider() tfbridge.ProviderInfo {
	p := tfbridge.ProviderInfo{
		P:                shimv2.NewProvider(postgresql.Provider()),
		Name:             "postgresql",
		Version:          Version,
		Description:      "A Pulumi package for creating and managing postgresql cloud resources.",
		Keywords:         []string{"pulumi", "postgresql"},
		License:          "Apache-2.0",
		Homepage:         "https://pulumi.io",
		Repository:       "https://github.com/pulumi/pulumi-postgresql",
		GitHubOrg:        "cyrilgdn",
		UpstreamRepoPath: UpstreamRepoPath,

		// Same env fallbacks as pulumi-postgresql; the other PG* variables
		// (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, ...) are DefaultFuncs
		// of the upstream TF schema itself and therefore apply unchanged.
		Config: map[string]*tfbridge.SchemaInfo{
			"sslmode":         {Default: &tfbridge.DefaultInfo{EnvVars: []string{"PGSSLMODE"}}},
			"connect_timeout": {Default: &tfbridge.DefaultInfo{EnvVars: []string{"PGCONNECT_TIMEOUT"}, Value: 180}},
		},

		// Only what the automatic mapping below would get wrong or leave out.
		Resources: map[string]*tfbridge.ResourceInfo{
			"postgresql_grant": {Tok: tfbridge.MakeResource("postgresql", "index", "Grant"), DeleteBeforeReplace: true},
			"postgresql_grant_role": {
				Tok:    tfbridge.MakeResource("postgresql", "index", "GrantRole"),
				Fields: map[string]*tfbridge.SchemaInfo{"grant_role": {CSharpName: "GrantRoleName"}},
			},
		},

		// Language sections: kept equal to pulumi-postgresql's so the schema's
		// "language" block matches the published SDKs.
		Python: &tfbridge.PythonInfo{RespectSchemaVersion: true},
		JavaScript: &tfbridge.JavaScriptInfo{
			RespectSchemaVersion: true,
			DevDependencies:      map[string]string{"@types/node": "^10.0.0", "@types/mime": "^2.0.0"},
		},
		Golang: &tfbridge.GolangInfo{
			ImportBasePath:                 "github.com/pulumi/pulumi-postgresql/sdk/v3/go/postgresql",
			GenerateResourceContainerTypes: true,
			RespectSchemaVersion:           true,
		},
		CSharp: &tfbridge.CSharpInfo{
			RespectSchemaVersion: true,
			PackageReferences:    map[string]string{"Pulumi": "3.*"},
			Namespaces:           map[string]string{"postgresql": "PostgreSql"},
		},

		EnableZeroDefaultSchemaVersion: true,
		EnableAccurateBridgePreview:    true,
	}
	p.Python.PyProject.Enabled = true

	// postgresql_default_privileges: published first as DefaultPrivileg (sic), now
	// DefaultPrivileges; both tokens exist, the old one as a deprecated alias.
	p.RenameResourceWithAlias("postgresql_default_privileges",
		tfbridge.MakeResource("postgresql", "index", "DefaultPrivileg"),
		tfbridge.MakeResource("postgresql", "index", "DefaultPrivileges"),
		"index", "index", &tfbridge.ResourceInfo{
			Docs: &tfbridge.DocInfo{Source: "postgresql_default_privileges.html.markdown"},
		})

	// Everything else: postgresql_foo_bar -> postgresql:index/fooBar:FooBar, and
	// data source postgresql_foo -> postgresql:index/getFoo:getFoo.
	p.MustComputeTokens(tokens.SingleModule("postgresql_", "index", tokens.MakeStandard("postgresql")))

	// "name" inputs get a random-suffixed default (max 255 chars), as in pulumi-postgresql.
	p.SetAutonaming(255, "-")
	return p
}
