// Validate prometheus-operator objects (ServiceMonitor, ...) in rendered manifests against the
// schemas generated from prometheus-operator's Go types (@kubernetes-models/prometheus-operator).
// kubernetes-validate only knows core Kubernetes kinds and merely warns on these.
// Usage: node validate-crds.mjs FILE.yaml [...]; prints one line per object; exit 1 on any error.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const models = { ServiceMonitor, PodMonitor, PrometheusRule };
let failures = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const object = doc.toJS();
    if (!object || object.apiVersion !== "monitoring.coreos.com/v1") continue;
    const Model = models[object.kind];
    const name = `${object.kind}/${object.metadata?.name}`;
    if (!Model) {
      console.log(`ERROR ${file} ${name}: no schema for this kind`);
      failures += 1;
      continue;
    }
    checked += 1;
    try {
      new Model(object).validate();
      console.log(`OK ${file} ${name}`);
    } catch (error) {
      console.log(`ERROR ${file} ${name}: ${error.message}`);
      failures += 1;
    }
  }
}
console.log(`checked ${checked}, failed ${failures}`);
process.exit(failures ? 1 : 0);
