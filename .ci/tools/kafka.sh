#!/usr/bin/env bash
# Apache Kafka for the tests, from the jars on Maven Central (no tarball): resolves one pinned
# version of kafka_2.13 + kafka-server (+ kafka-tools for the CLI) and a logging binding into
# .tools/kafka/libs, and writes .tools/bin/kafka-class (runs any Kafka main class) plus the
# kafka-topics / kafka-console-consumer / kafka-console-producer / kafka-storage wrappers.
# Idempotent: a matching version stamp means nothing is downloaded again.
set -euo pipefail

KAFKA_VERSION=4.1.1
LOG4J_VERSION=2.24.3 # the log4j2 core that Kafka $KAFKA_VERSION ships with

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=${TRADEBOT_TOOLS_DIR:-$ROOT/.tools}
HOME_DIR=$TOOLS/kafka
BIN=$TOOLS/bin
STAMP=$HOME_DIR/.version

die() {
	echo "kafka.sh: $*" >&2
	exit 1
}
command -v java >/dev/null || die "java not found; Kafka $KAFKA_VERSION needs Java 17+ (apt-get install openjdk-17-jre-headless)"
command -v mvn >/dev/null || die "mvn not found; install Maven (apt-get install maven) to resolve the Kafka jars"

if [[ -f $STAMP && $(cat "$STAMP") == "$KAFKA_VERSION" && -x $BIN/kafka-class ]]; then
	echo "kafka $KAFKA_VERSION cached"
	exit 0
fi

start=$SECONDS
mkdir -p "$HOME_DIR/build" "$BIN"
sed -e "s/@KAFKA_VERSION@/$KAFKA_VERSION/" -e "s/@LOG4J_VERSION@/$LOG4J_VERSION/" \
	"$ROOT/.ci/tools/kafka/pom.xml" >"$HOME_DIR/build/pom.xml"
rm -rf "$HOME_DIR/libs.new"
if ! mvn -B -q -f "$HOME_DIR/build/pom.xml" dependency:copy-dependencies \
	-DincludeScope=runtime -DoutputDirectory="$HOME_DIR/libs.new" >"$HOME_DIR/build/maven.log" 2>&1; then
	tail -n 30 "$HOME_DIR/build/maven.log" >&2
	die "Maven could not resolve Kafka $KAFKA_VERSION (log: $HOME_DIR/build/maven.log)"
fi
rm -rf "$HOME_DIR/libs"
mv "$HOME_DIR/libs.new" "$HOME_DIR/libs"
cp "$ROOT/.ci/tools/kafka/log4j2.yaml" "$HOME_DIR/log4j2.yaml"

cat >"$BIN/kafka-class" <<SCRIPT
#!/usr/bin/env bash
# kafka-class MAIN_CLASS ARGS...: runs a class of Kafka $KAFKA_VERSION from .tools/kafka/libs.
exec java \${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -XX:+UseG1GC -Djava.awt.headless=true \\
	-Dlog4j2.configurationFile=\${KAFKA_LOG4J_CONFIG:-$HOME_DIR/log4j2.yaml} \\
	-cp "$HOME_DIR/libs/*" "\$@"
SCRIPT
chmod +x "$BIN/kafka-class"
for pair in kafka-topics=org.apache.kafka.tools.TopicCommand \
	kafka-console-consumer=org.apache.kafka.tools.consumer.ConsoleConsumer \
	kafka-console-producer=org.apache.kafka.tools.ConsoleProducer \
	kafka-consumer-groups=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
	kafka-storage=kafka.tools.StorageTool \
	kafka-server-start=kafka.Kafka; do
	printf '#!/usr/bin/env bash\nexec "%s" %s "$@"\n' "$BIN/kafka-class" "${pair#*=}" >"$BIN/${pair%%=*}"
	chmod +x "$BIN/${pair%%=*}"
done
# Proves the jars load: prints the version without starting anything.
reported=$("$BIN/kafka-class" kafka.Kafka --version 2>/dev/null | head -n 1) ||
	die "the resolved jars do not start kafka.Kafka (java: $(java -version 2>&1 | head -n 1))"
echo "$KAFKA_VERSION" >"$STAMP"
echo "kafka $KAFKA_VERSION installed ($((SECONDS - start))s; kafka.Kafka --version: $reported)"
