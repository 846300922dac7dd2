package arbor.testservices;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.graphdb.Result;
import org.neo4j.graphdb.Transaction;
import org.neo4j.io.ByteUnit;

/**
 * Embedded Neo4j Community with only the Bolt connector, for arbor's integration tests.
 *
 * <p>Usage: {@code Launcher HOME_DIR BOLT_PORT PASSWORD READY_FILE}
 *
 * <ul>
 *   <li>HOME_DIR: Neo4j home (databases, transaction logs and Neo4j's own logs go below it);
 *       reusing it keeps the data, so a restart after a crash or a stop sees the same graph.
 *   <li>BOLT_PORT: Bolt listens on 127.0.0.1:BOLT_PORT only. No HTTP/HTTPS connector.
 *   <li>PASSWORD: password of user {@code neo4j}; auth is on. An empty string turns auth off.
 *   <li>READY_FILE: written once Bolt is up and the password is set (tests/services/lib.sh
 *       waits for it as well as for a Bolt handshake).
 * </ul>
 *
 * <p>SIGTERM (or SIGINT) shuts the DBMS down cleanly through a shutdown hook.
 */
public final class Launcher {
    private Launcher() {}

    private static void log(String msg) {
        System.out.println(Instant.now() + " [arbor-neo4j] " + msg);
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: Launcher HOME_DIR BOLT_PORT PASSWORD READY_FILE");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);
        String password = args[2];
        Path ready = Path.of(args[3]).toAbsolutePath();
        boolean auth = !password.isEmpty();

        Files.deleteIfExists(ready);
        log("starting Neo4j (home " + home + ", bolt 127.0.0.1:" + port + ", auth " + (auth ? "on" : "off") + ")");
        long t0 = System.nanoTime();

        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                .setConfig(HttpConnector.enabled, false)
                .setConfig(HttpsConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, auth)
                .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(64))
                .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                .build();

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            log("shutdown requested, stopping Neo4j");
            try {
                Files.deleteIfExists(ready);
            } catch (Exception ignored) {
                // best effort
            }
            dbms.shutdown();
            log("Neo4j stopped");
            stopped.countDown();
        }, "arbor-neo4j-shutdown"));

        if (auth) {
            GraphDatabaseService system = dbms.database("system");
            boolean changeRequired;
            try (Transaction tx = system.beginTx();
                    Result r = tx.execute("SHOW USERS YIELD user, passwordChangeRequired "
                            + "WHERE user = 'neo4j' RETURN passwordChangeRequired")) {
                changeRequired = r.hasNext() && Boolean.TRUE.equals(r.next().get("passwordChangeRequired"));
                tx.commit();
            }
            if (changeRequired) {
                system.executeTransactionally(
                        "ALTER USER neo4j SET PASSWORD $pw CHANGE NOT REQUIRED", Map.of("pw", password));
                log("initial password of user neo4j set");
            }
        }

        Files.writeString(ready, ProcessHandle.current().pid() + "\n");
        log(String.format("ready after %.1f s", (System.nanoTime() - t0) / 1e9));
        stopped.await();
    }
}
