/**
 * The library carries its own copies of what it shares with aegis-server (so the published
 * package needs nothing outside itself); these must equal the server's definitions, or an
 * offline verdict and an online one would disagree.
 */
import t from 'tap';
import { AUD_FLEET_LICENSE as P_AUD_FLEET, AUD_MODULE_LICENSE as P_AUD_MODULE, SEG_EXP_LEEWAY_SECONDS, TOKEN_ALG as P_ALG, VALIDATION_CODES, FLEET_NAME_PATTERN as P_FLEET, subjects } from '../../../protocol/src/index.js';
import { AUD_FLEET_LICENSE, AUD_MODULE_LICENSE, FLEET_ENVELOPE_LEEWAY_SECONDS, FLEET_NAME_PATTERN, RESULT_CODES, TOKEN_ALG, fleetLicenseSubject } from '../src/index.js';

t.test("the library's result codes are the server's validation codes, in order", async (t) => {
  t.same([...RESULT_CODES], [...VALIDATION_CODES]);
});

t.test('audiences, algorithm, fleet names, subject and leeway match the server', async (t) => {
  t.equal(AUD_MODULE_LICENSE, P_AUD_MODULE);
  t.equal(AUD_FLEET_LICENSE, P_AUD_FLEET);
  t.equal(TOKEN_ALG, P_ALG);
  t.equal(FLEET_NAME_PATTERN.source, P_FLEET.source);
  t.equal(fleetLicenseSubject('fleet-a_1'), subjects.license('fleet-a_1'));
  t.equal(FLEET_ENVELOPE_LEEWAY_SECONDS, SEG_EXP_LEEWAY_SECONDS);
});
