package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/haconfd/haconfd/internal/config"
)

// flagsMarkdown documents every flag of every command as Markdown, for
// the README (kept in sync by TestREADMEFlags; `make readme` rewrites it).
func flagsMarkdown(root *cobra.Command) string {
	var b strings.Builder
	cmds := root.Commands()
	sort.SliceStable(cmds, func(i, j int) bool { return order(cmds[i].Name()) < order(cmds[j].Name()) })
	for _, c := range cmds {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		fmt.Fprintf(&b, "### `haconfd %s`\n\n%s\n\n", c.Name(), c.Short)
		if c.DisableFlagParsing {
			fmt.Fprintf(&b, "Takes confd's own flags; `haconfd %s -h` lists them.\n\n", c.Name())
			continue
		}
		var rows []string
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Hidden {
				return
			}
			def := f.DefValue
			if def == "[]" || def == "" {
				def = "—"
			} else {
				def = "`" + def + "`"
			}
			env := "—"
			if c.Name() == "run" || c.Name() == "render" || c.Name() == "status" {
				if isSetting(f.Name) {
					env = "`" + config.EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")) + "`"
				}
			}
			rows = append(rows, fmt.Sprintf("| `--%s` | %s | %s | %s |", f.Name, def, env, strings.ReplaceAll(f.Usage, "|", "\\|")))
		})
		if len(rows) == 0 {
			b.WriteString("No flags.\n\n")
			continue
		}
		b.WriteString("| flag | default | environment | meaning |\n|---|---|---|---|\n")
		b.WriteString(strings.Join(rows, "\n"))
		b.WriteString("\n\n")
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}

func order(name string) int {
	for i, n := range []string{"run", "render", "confd", "register", "notify", "check", "drain", "undrain", "status", "version"} {
		if n == name {
			return i
		}
	}
	return 100
}

// isSetting says whether name is a Config setting (also settable by
// environment and config file), not a command-only flag.
func isSetting(name string) bool {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	config.AddFlags(fs)
	return fs.Lookup(name) != nil
}
