// Strimzi's custom resources checked against Strimzi's own schema, with no cluster and no CRD file:
// @kubernetes-models/strimzi-kafka-operator generates a validator for each kind from the CRDs of a
// Strimzi release (package.json's crd-generate input names it). It checks types, enums and required
// fields; it lets unknown fields pass, which tests/unit/test_helm.py checks on its own.
//   node tests/strimzi_validate.mjs MODELS_DIR < resources.json
// MODELS_DIR is where npm installed the package (the Makefile's STRIMZI_MODELS); standard input is a
// JSON array of resources. One line per resource; the exit status is 1 if any is invalid.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [models] = process.argv.slice(2);
const kinds = await import(
  pathToFileURL(
    join(models, "node_modules/@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1/index.js"),
  ).href
);
let invalid = 0;
for (const resource of JSON.parse(readFileSync(0, "utf8"))) {
  const name = `${resource.kind} ${resource.metadata?.name}`;
  const Kind = resource.apiVersion === "kafka.strimzi.io/v1" ? kinds[resource.kind] : undefined;
  if (Kind === undefined) {
    invalid += 1;
    console.log(`${name}: no kafka.strimzi.io/v1 kind of that name`);
    continue;
  }
  try {
    new Kind(resource).validate();
    console.log(`${name}: valid`);
  } catch (error) {
    invalid += 1;
    console.log(`${name}: ${error.message}`);
  }
}
process.exit(invalid ? 1 : 0);
