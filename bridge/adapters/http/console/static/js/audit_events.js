// Reading the audit trail (/fhir/AuditEvent, R4 or R5) into rows for the console.
import { get, query } from "./api.js";

export function eventRow(event) {
  const agent = (event.agent || [])[0] || {};
  const who = agent.who ? (agent.who.reference || (agent.who.identifier || {}).value || "") : "";
  const entities = (event.entity || []).map((e) => (e.what && (e.what.reference
    || (e.what.identifier && `${(e.what.identifier.system || "").replace("urn:bridge:", "")} ${e.what.identifier.value}`))) || "");
  const action = event.code ? event.code.text : ((event.subtype || [])[0] || {}).display;
  const outcome = typeof event.outcome === "string" ? event.outcome : ((event.outcome || {}).code || {}).code;
  return { id: event.id, recorded: event.recorded, who, action: action || event.action,
    outcome: outcome === "0" ? "success" : "failure", entities: entities.join(", ") };
}

export async function auditEvents(params) {
  const bundle = await get(`/fhir/AuditEvent${query({ _count: 50, ...params })}`,
    { accept: "application/fhir+json" });
  return (bundle.entry || []).map((entry) => eventRow(entry.resource));
}
