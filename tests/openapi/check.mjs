// Validates an OpenAPI document (argv[2]) against the OpenAPI 3.1 schema with
// @seriousme/openapi-schema-validator, then checks that every $ref resolves.
// Exit 0 when valid; 1 with the validator's errors otherwise.
import { Validator } from "@seriousme/openapi-schema-validator";

const file = process.argv[2];
const validator = new Validator();
const res = await validator.validate(file);
if (!res.valid) {
  console.error(`${file}: not a valid OpenAPI document:`);
  console.error(JSON.stringify(res.errors, null, 1));
  process.exit(1);
}
if (validator.version !== "3.1") {
  console.error(`${file}: OpenAPI ${validator.version}, expected 3.1`);
  process.exit(1);
}
try {
  validator.resolveRefs();
} catch (e) {
  console.error(`${file}: a $ref does not resolve: ${e.message}`);
  process.exit(1);
}
console.log(`${file}: valid OpenAPI ${validator.version}`);
