// The CRM workload for the Node.js clients of the ORM suite: the same
// steps as workload.py (its docstring describes the adapter and the
// environment), run against an adapter object of async methods.
'use strict';

const fs = require('fs');

const FIELDS = ['full_name', 'email', 'phone', 'national_id', 'address'];
const USERS = ['crm_user', 'support_user', 'analyst_user', 'kyc_user'];
const READ_KEYS = ['c1', 'c2'];

function readPlan(path) {
  const plan = { segment: null, customers: {}, new: {} };
  for (const line of fs.readFileSync(path, 'utf8').split('\n').filter(Boolean)) {
    const parts = line.split('\t');
    if (parts[0] === 'segment') plan.segment = parts[1];
    else if (parts[0] === 'new') plan.new[parts[1]] = parts[2];
    else plan.customers[parts[0]] = Object.fromEntries(FIELDS.map((f, i) => [f, parts[i + 1]]));
  }
  return plan;
}

function connection(user) {
  const settings = {
    host: process.env.PGHOST,
    port: Number(process.env.PGPORT),
    database: process.env.PGDATABASE,
    user,
    password: process.env.ORM_PASSWORD,
  };
  if (process.env.ORM_TLS_CA) {
    // ORM_TLS=1: TLS to pgveil, the certificate and its name checked.
    settings.ssl = { ca: require('fs').readFileSync(process.env.ORM_TLS_CA), rejectUnauthorized: true };
  }
  return settings;
}

function expectEqual(what, got, want) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) throw new Error(`${what}: expected ${w}, got ${g}`);
}

async function run(client, a) {
  const plan = readPlan(process.env.ORM_PLAN);
  const observed = [];
  const ids = {};
  let failures = 0;
  const c = (key, changes = {}) => ({ ...plan.customers[key], segment: plan.segment, ...changes });
  const nums = (rows) => rows.map(Number);
  const pairs = (rows) => rows.map(([id, v]) => [Number(id), v]);

  async function step(name, action) {
    try {
      await action();
      console.log(`PASS ${client} ${name}`);
    } catch (e) {
      failures += 1;
      const code = e.code || (e.original && e.original.code) || e.sqlState;
      const detail = code ? `[${code}] ` : '';
      console.log(`FAIL ${client} ${name}: ${detail}${String(e.message).replace(/\s+/g, ' ').slice(0, 400)}`);
    }
  }
  async function expectError(name, code, action) {
    await step(name, async () => {
      let error = null;
      try {
        await action();
      } catch (e) {
        error = e;
      }
      if (!error) throw new Error(`succeeded, expected SQLSTATE ${code}`);
      expectEqual('SQLSTATE', error.code, code);
    });
  }
  const lookup = (method, field, key) => async () =>
    expectEqual(`${method} ${key}`, pairs(await a[method](c(key)[field])), [[ids[key], c(key).full_name]]);
  const lookupMany = (method, keys) => async () => {
    const got = nums(await a[method](keys.map((k) => c(k).email))).sort((x, y) => x - y);
    expectEqual(`${method} ${keys}`, got, keys.map((k) => ids[k]).sort((x, y) => x - y));
  };
  const findEmail = async (email) => pairs(await a.findByEmail(email));

  await step('insert_one', async () => {
    const [id, email] = await a.insertOne(c('c0'));
    ids.c0 = Number(id);
    expectEqual('RETURNING email', email, c('c0').email);
  });
  await step('insert_batch', async () => {
    const batch = nums(await a.insertBatch(['c1', 'c2', 'c3', 'c4'].map((k) => c(k))));
    expectEqual('ids returned', batch.length, 4);
    ['c1', 'c2', 'c3', 'c4'].forEach((k, i) => (ids[k] = batch[i]));
  });
  await step('insert_save', async () => (ids.c5 = Number(await a.insertSave(c('c5')))));
  await step('lookup_email', lookup('findByEmail', 'email', 'c3'));
  await step('lookup_phone', lookup('findByPhone', 'phone', 'c4'));
  await step('lookup_in', lookupMany('findIn', ['c1', 'c3']));
  await step('lookup_any', lookupMany('findAny', ['c2', 'c4']));
  await step('update_phone', async () => {
    expectEqual('rows updated', await a.updatePhone(ids.c1, plan.new.phone), 1);
    expectEqual('new phone', pairs(await a.findByPhone(plan.new.phone)), [[ids.c1, c('c1').full_name]]);
    expectEqual('old phone', pairs(await a.findByPhone(c('c1').phone)), []);
  });
  await step('update_address_support', async () =>
    expectEqual('rows updated', await a.updateAddressAsSupport(ids.c2, plan.new.address), 1));
  await step('upsert', async () => {
    ids.c6 = Number(await a.nextId());
    await a.upsert(ids.c6, c('c6'));
    await a.upsert(ids.c6, c('c6', { email: plan.new.email }));
    expectEqual('upserted', await findEmail(plan.new.email), [[ids.c6, c('c6').full_name]]);
    expectEqual('old e-mail', await findEmail(c('c6').email), []);
  });
  await step('delete', async () => {
    expectEqual('rows deleted', await a.deleteByEmail(c('c5').email), 1);
    expectEqual('after delete', await findEmail(c('c5').email), []);
  });
  await step('page', async () =>
    expectEqual('page 2 of 3', pairs(await a.page(plan.segment, 3, 1)), ['c1', 'c2', 'c3'].map((k) => [ids[k], c(k).email])));
  await step('savepoint', async () => {
    ids.c7 = Number(await a.savepointInsert(c('c7'), c('x')));
    expectEqual('c7', await findEmail(c('c7').email), [[ids.c7, c('c7').full_name]]);
  });
  await step('read_as_roles', async () => {
    for (const user of USERS) {
      for (const purpose of [null, 'kyc']) {
        for (const key of READ_KEYS) {
          const row = await a.readAs(user, ids[key], purpose);
          const values = FIELDS.map((f) => (row[f] === null ? '\\N' : row[f]));
          observed.push(['view', user, purpose || '-', key, ...values].join('\t'));
        }
      }
    }
  });
  const x = c('x');
  await expectError('refused_randomized_search', '0A000', () => a.findByName(x.full_name));
  await expectError('refused_order_by', '0A000', () => a.orderByEmail(plan.segment));
  await expectError('refused_computed_write', '0A000', () => a.insertLower(x));
  await expectError('denied_analyst_insert', '42501', () => a.insertAs('analyst_user', x));
  await step('nothing_else_written', async () =>
    expectEqual('rows of this client', Number(await a.countSegment(plan.segment)), 7));
  fs.writeFileSync(process.env.ORM_OBSERVED, observed.map((l) => l + '\n').join(''));
  console.log(`DONE ${client} failures=${failures}`);
  await a.close();
  return failures ? 1 : 0;
}

module.exports = { run, connection, FIELDS };
