// Command pulumi-tfgen-postgresql generates the Pulumi schema from info.Provider()
// (build.sh runs "pulumi-tfgen-postgresql schema --out DIR").
package main

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfgen"

	"x402db.invalid/pulumi-resource-postgresql/info"
)

func main() {
	tfgen.Main("postgresql", info.Version, info.Provider())
}
