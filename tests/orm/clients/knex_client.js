// The CRM workload with the Knex query builder (on pg): quoted identifiers,
// `insert(...).returning`, multi-row inserts, `whereIn`, `onConflict().merge()`,
// `limit`/`offset` bound as parameters, and nested transactions (savepoints).
'use strict';

const knexFactory = require('knex');
const workload = require('./workload');

const READ = ['full_name', 'email', 'phone', 'national_id', 'address'];

class Knex {
  constructor() {
    this.dbs = {};
  }

  db(user = 'crm_user') {
    if (!this.dbs[user]) {
      this.dbs[user] = knexFactory({ client: 'pg', connection: workload.connection(user), pool: { min: 0, max: 1 } });
    }
    return this.dbs[user];
  }

  async insertOne(c) {
    const [row] = await this.db()('customers').insert(c).returning(['id', 'email']);
    return [row.id, row.email];
  }

  async insertBatch(cs) {
    return (await this.db()('customers').insert(cs).returning('id')).map((r) => r.id);
  }

  async insertSave(c, db = this.db()) {
    const [row] = await db.insert(c).into('customers').returning('id');
    return row.id;
  }

  async find(where) {
    const rows = await this.db()('customers').where(where).orderBy('id').select('id', 'full_name');
    return rows.map((r) => [r.id, r.full_name]);
  }

  findByEmail(email) {
    return this.find({ email });
  }

  findByPhone(phone) {
    return this.find({ phone });
  }

  async findIn(emails) {
    return (await this.db()('customers').whereIn('email', emails).select('id')).map((r) => r.id);
  }

  async findAny(emails) {
    return (await this.db()('customers').whereRaw('email = ANY(?)', [emails]).select('id')).map((r) => r.id);
  }

  updatePhone(id, phone) {
    return this.db()('customers').where({ id }).update({ phone });
  }

  updateAddressAsSupport(id, address) {
    return this.db('support_user')('customers').where({ id }).update({ address });
  }

  async nextId() {
    return (await this.db().raw("SELECT nextval('customers_id_seq') AS id")).rows[0].id;
  }

  upsert(id, c) {
    return this.db()('customers').insert({ id, ...c }).onConflict('id').merge();
  }

  deleteByEmail(email) {
    return this.db()('customers').where({ email }).del();
  }

  async page(segment, limit, offset) {
    const rows = await this.db()('customers').where({ segment }).orderBy('id').limit(limit).offset(offset);
    return rows.map((r) => [r.id, r.email]);
  }

  savepointInsert(c, x) {
    return this.db().transaction(async (trx) => {
      const id = await this.insertSave(c, trx);
      try {
        await trx.transaction((nested) => this.insertLower(x, nested));
      } catch (e) {
        if (e.code !== '0A000') throw e;
      }
      return id;
    });
  }

  readAs(user, id, purpose) {
    return this.db(user).transaction(async (trx) => {
      if (purpose) await trx.raw(`SET LOCAL pgveil.purpose = '${purpose}'`);
      return trx('customers').where({ id }).first(READ);
    });
  }

  findByName(name) {
    return this.find({ full_name: name });
  }

  orderByEmail(segment) {
    return this.db()('customers').where({ segment }).orderBy('email').select('id');
  }

  insertLower(x, db = this.db()) {
    return db('customers').insert({ email: db.raw('lower(?)', [x.email]), segment: x.segment });
  }

  insertAs(user, x) {
    return this.db(user)('customers').insert(x);
  }

  async countSegment(segment) {
    return (await this.db()('customers').where({ segment }).count('* as n'))[0].n;
  }

  async close() {
    await Promise.all(Object.values(this.dbs).map((db) => db.destroy()));
  }
}

workload.run('knex', new Knex()).then((code) => process.exit(code), (e) => {
  console.error(e);
  process.exit(1);
});
