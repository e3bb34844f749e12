// The CRM workload with the PostgreSQL JDBC driver (Debian's
// libpostgresql-jdbc-java), plain JDBC: PreparedStatement everywhere (the
// extended protocol; each lookup runs more than prepareThreshold = 5 times,
// so the driver switches to a named server-side statement), addBatch /
// executeBatch, generated keys (RETURNING), createArrayOf for = ANY(?),
// and setSavepoint / rollback(savepoint). The same steps as workload.py.
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

public class CrmJdbc {
    static final String[] FIELDS = {"full_name", "email", "phone", "national_id", "address"};
    static final String[] USERS = {"crm_user", "support_user", "analyst_user", "kyc_user"};
    static final String COLUMNS = "full_name, email, phone, national_id, address, segment";
    static final String INSERT = "INSERT INTO customers (" + COLUMNS + ") VALUES (?, ?, ?, ?, ?, ?)";
    /** Executions of each lookup: past prepareThreshold, so server-side prepared. */
    static final int REPEAT = 7;

    interface Action {
        void run() throws Exception;
    }

    final Map<String, Map<String, String>> customers = new HashMap<>();
    final Map<String, String> newValues = new HashMap<>();
    final Map<String, Long> ids = new HashMap<>();
    final Map<String, Connection> connections = new HashMap<>();
    final List<String> observed = new ArrayList<>();
    String segment;
    int failures = 0;

    public static void main(String[] args) throws Exception {
        System.exit(new CrmJdbc().run());
    }

    Connection db(String user) throws SQLException {
        if (!connections.containsKey(user)) {
            String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT") + "/"
                    + System.getenv("PGDATABASE");
            String ca = System.getenv("ORM_TLS_CA");
            if (ca != null) {
                // ORM_TLS=1: TLS to pgveil, the certificate and its name checked.
                url += "?sslmode=verify-full&sslrootcert=" + ca;
            }
            connections.put(user, DriverManager.getConnection(url, user, System.getenv("ORM_PASSWORD")));
        }
        return connections.get(user);
    }

    Connection app() throws SQLException {
        return db("crm_user");
    }

    void readPlan() throws Exception {
        for (String line : Files.readAllLines(Path.of(System.getenv("ORM_PLAN")), StandardCharsets.UTF_8)) {
            String[] parts = line.split("\t", -1);
            if (parts[0].equals("segment")) {
                segment = parts[1];
            } else if (parts[0].equals("new")) {
                newValues.put(parts[1], parts[2]);
            } else {
                Map<String, String> c = new HashMap<>();
                for (int i = 0; i < FIELDS.length; i++) c.put(FIELDS[i], parts[i + 1]);
                customers.put(parts[0], c);
            }
        }
    }

    String v(String key, String field) {
        return customers.get(key).get(field);
    }

    static void expectEqual(String what, Object got, Object want) {
        if (!Objects.equals(got, want)) throw new IllegalStateException(what + ": expected " + want + ", got " + got);
    }

    void step(String name, Action action) {
        try {
            action.run();
            System.out.println("PASS jdbc " + name);
        } catch (Exception e) {
            failures++;
            String code = e instanceof SQLException ? "[" + ((SQLException) e).getSQLState() + "] " : "";
            System.out.println("FAIL jdbc " + name + ": " + code + String.valueOf(e.getMessage()).replaceAll("\\s+", " "));
        }
    }

    void expectError(String name, String sqlstate, Action action) {
        step(name, () -> {
            try {
                action.run();
            } catch (SQLException e) {
                expectEqual("SQLSTATE", e.getSQLState(), sqlstate);
                return;
            }
            throw new IllegalStateException("succeeded, expected SQLSTATE " + sqlstate);
        });
    }

    static void bind(PreparedStatement st, Map<String, String> c, String segment, int from) throws SQLException {
        for (int i = 0; i < FIELDS.length; i++) st.setString(from + i, c.get(FIELDS[i]));
        st.setString(from + FIELDS.length, segment);
    }

    long insert(Connection db, String key) throws SQLException {
        try (PreparedStatement st = db.prepareStatement(INSERT, new String[] {"id"})) {
            bind(st, customers.get(key), segment, 1);
            st.executeUpdate();
            ResultSet keys = st.getGeneratedKeys();
            keys.next();
            return keys.getLong(1);
        }
    }

    /** Ids and full names of customers WHERE column = value. */
    List<String> find(String column, String value) throws SQLException {
        String sql = "SELECT id, full_name FROM customers WHERE " + column + " = ? ORDER BY id";
        try (PreparedStatement st = app().prepareStatement(sql)) {
            List<String> found = new ArrayList<>();
            for (int i = 0; i < REPEAT; i++) {
                st.setString(1, value);
                found.clear();
                try (ResultSet rs = st.executeQuery()) {
                    while (rs.next()) found.add(rs.getLong(1) + " " + rs.getString(2));
                }
            }
            return found;
        }
    }

    List<String> row(String key) {
        return ids.containsKey(key) ? List.of(ids.get(key) + " " + v(key, "full_name")) : List.of("no id for " + key);
    }

    List<Long> idsOf(PreparedStatement st) throws SQLException {
        List<Long> found = new ArrayList<>();
        try (ResultSet rs = st.executeQuery()) {
            while (rs.next()) found.add(rs.getLong(1));
        }
        found.sort(null);
        return found;
    }

    int update(String user, String sql, String value, long id) throws SQLException {
        try (PreparedStatement st = db(user).prepareStatement(sql)) {
            st.setString(1, value);
            st.setLong(2, id);
            return st.executeUpdate();
        }
    }

    void upsert(long id, Map<String, String> c) throws SQLException {
        StringBuilder set = new StringBuilder();
        for (String f : FIELDS) set.append(set.length() == 0 ? "" : ", ").append(f).append(" = EXCLUDED.").append(f);
        String sql = "INSERT INTO customers (id, " + COLUMNS + ") VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET " + set;
        try (PreparedStatement st = app().prepareStatement(sql)) {
            st.setLong(1, id);
            bind(st, c, segment, 2);
            st.executeUpdate();
        }
    }

    void insertLower(Connection db, String email) throws SQLException {
        try (PreparedStatement st = db.prepareStatement("INSERT INTO customers (email, segment) VALUES (lower(?), ?)")) {
            st.setString(1, email);
            st.setString(2, segment);
            st.executeUpdate();
        }
    }

    void readAs(String user, String purpose, String key) throws SQLException {
        Connection db = db(user);
        try (Statement st = db.createStatement()) {
            if (purpose != null) st.execute("SET pgveil.purpose = '" + purpose + "'");
        }
        String sql = "SELECT full_name, email, phone, national_id, address FROM customers WHERE id = ?";
        try (PreparedStatement st = db.prepareStatement(sql)) {
            for (int i = 0; i < REPEAT; i++) {
                st.setLong(1, ids.get(key));
                try (ResultSet rs = st.executeQuery()) {
                    rs.next();
                    if (i < REPEAT - 1) continue;
                    StringBuilder line = new StringBuilder("view\t" + user + "\t" + (purpose == null ? "-" : purpose) + "\t" + key);
                    for (int f = 1; f <= FIELDS.length; f++) {
                        String value = rs.getString(f);
                        line.append('\t').append(value == null ? "\\N" : value);
                    }
                    observed.add(line.toString());
                }
            }
        }
        try (Statement st = db.createStatement()) {
            if (purpose != null) st.execute("RESET pgveil.purpose");
        }
    }

    int run() throws Exception {
        readPlan();
        step("insert_one", () -> {
            try (PreparedStatement st = app().prepareStatement(INSERT + " RETURNING id, email")) {
                bind(st, customers.get("c0"), segment, 1);
                try (ResultSet rs = st.executeQuery()) {
                    rs.next();
                    ids.put("c0", rs.getLong(1));
                    expectEqual("RETURNING email", rs.getString(2), v("c0", "email"));
                }
            }
        });
        step("insert_batch", () -> {
            String[] keys = {"c1", "c2", "c3", "c4"};
            try (PreparedStatement st = app().prepareStatement(INSERT, new String[] {"id"})) {
                for (String key : keys) {
                    bind(st, customers.get(key), segment, 1);
                    st.addBatch();
                }
                st.executeBatch();
                ResultSet rs = st.getGeneratedKeys();
                for (String key : keys) {
                    rs.next();
                    ids.put(key, rs.getLong(1));
                }
            }
        });
        step("insert_save", () -> ids.put("c5", insert(app(), "c5")));
        step("lookup_email", () -> expectEqual("by e-mail", find("email", v("c3", "email")), row("c3")));
        step("lookup_phone", () -> expectEqual("by phone", find("phone", v("c4", "phone")), row("c4")));
        step("lookup_in", () -> {
            try (PreparedStatement st = app().prepareStatement("SELECT id FROM customers WHERE email IN (?, ?)")) {
                st.setString(1, v("c1", "email"));
                st.setString(2, v("c3", "email"));
                expectEqual("IN", idsOf(st), List.of(ids.get("c1"), ids.get("c3")));
            }
        });
        step("lookup_any", () -> {
            try (PreparedStatement st = app().prepareStatement("SELECT id FROM customers WHERE email = ANY(?)")) {
                st.setArray(1, app().createArrayOf("text", new String[] {v("c2", "email"), v("c4", "email")}));
                expectEqual("ANY", idsOf(st), List.of(ids.get("c2"), ids.get("c4")));
            }
        });
        step("update_phone", () -> {
            expectEqual("rows updated", update("crm_user", "UPDATE customers SET phone = ? WHERE id = ?", newValues.get("phone"), ids.get("c1")), 1);
            expectEqual("new phone", find("phone", newValues.get("phone")), row("c1"));
            expectEqual("old phone", find("phone", v("c1", "phone")), List.of());
        });
        step("update_address_support", () -> expectEqual("rows updated",
                update("support_user", "UPDATE customers SET address = ? WHERE id = ?", newValues.get("address"), ids.get("c2")), 1));
        step("upsert", () -> {
            try (Statement st = app().createStatement(); ResultSet rs = st.executeQuery("SELECT nextval('customers_id_seq')")) {
                rs.next();
                ids.put("c6", rs.getLong(1));
            }
            upsert(ids.get("c6"), customers.get("c6"));
            Map<String, String> changed = new HashMap<>(customers.get("c6"));
            changed.put("email", newValues.get("email"));
            upsert(ids.get("c6"), changed);
            expectEqual("upserted", find("email", newValues.get("email")), row("c6"));
            expectEqual("old e-mail", find("email", v("c6", "email")), List.of());
        });
        step("delete", () -> {
            try (PreparedStatement st = app().prepareStatement("DELETE FROM customers WHERE email = ?")) {
                st.setString(1, v("c5", "email"));
                expectEqual("rows deleted", st.executeUpdate(), 1);
            }
            expectEqual("after delete", find("email", v("c5", "email")), List.of());
        });
        step("page", () -> {
            String sql = "SELECT id, email FROM customers WHERE segment = ? ORDER BY id LIMIT ? OFFSET ?";
            try (PreparedStatement st = app().prepareStatement(sql)) {
                st.setString(1, segment);
                st.setInt(2, 3);
                st.setInt(3, 1);
                List<String> got = new ArrayList<>();
                try (ResultSet rs = st.executeQuery()) {
                    while (rs.next()) got.add(rs.getLong(1) + " " + rs.getString(2));
                }
                List<String> want = new ArrayList<>();
                for (String k : new String[] {"c1", "c2", "c3"}) want.add(ids.get(k) + " " + v(k, "email"));
                expectEqual("page 2 of 3", got, want);
            }
        });
        step("savepoint", () -> {
            Connection db = app();
            db.setAutoCommit(false);
            try {
                ids.put("c7", insert(db, "c7"));
                Savepoint sp = db.setSavepoint();
                try {
                    insertLower(db, v("x", "email"));
                } catch (SQLException e) {
                    db.rollback(sp);
                }
                db.commit();
            } finally {
                db.setAutoCommit(true);
            }
            expectEqual("c7", find("email", v("c7", "email")), row("c7"));
        });
        step("read_as_roles", () -> {
            for (String user : USERS) {
                for (String purpose : new String[] {null, "kyc"}) {
                    for (String key : new String[] {"c1", "c2"}) readAs(user, purpose, key);
                }
            }
        });
        expectError("refused_randomized_search", "0A000", () -> find("full_name", v("x", "full_name")));
        expectError("refused_order_by", "0A000", () -> {
            try (PreparedStatement st = app().prepareStatement("SELECT id FROM customers WHERE segment = ? ORDER BY email")) {
                st.setString(1, segment);
                st.executeQuery().close();
            }
        });
        expectError("refused_computed_write", "0A000", () -> insertLower(app(), v("x", "email")));
        expectError("denied_analyst_insert", "42501", () -> insert(db("analyst_user"), "x"));
        step("nothing_else_written", () -> {
            try (PreparedStatement st = app().prepareStatement("SELECT count(*) FROM customers WHERE segment = ?")) {
                st.setString(1, segment);
                try (ResultSet rs = st.executeQuery()) {
                    rs.next();
                    expectEqual("rows of this client", rs.getLong(1), 7L);
                }
            }
        });
        Files.write(Path.of(System.getenv("ORM_OBSERVED")), observed, StandardCharsets.UTF_8);
        System.out.println("DONE jdbc failures=" + failures);
        for (Connection c : connections.values()) c.close();
        return failures == 0 ? 0 : 1;
    }
}
