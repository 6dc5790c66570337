// Predefined function `nodejs-calculator`: arithmetic over a list of numbers.
module.exports = async (event) => {
  const { operation, values } = event.params;
  const [first, ...rest] = values;
  switch (operation) {
    case "add":
      return { value: values.reduce((acc, v) => acc + v, 0) };
    case "subtract":
      return { value: rest.reduce((acc, v) => acc - v, first) };
    case "multiply":
      return { value: values.reduce((acc, v) => acc * v, 1) };
    case "divide":
      return {
        value: rest.reduce((acc, v) => {
          if (v === 0) throw new Error("division by zero");
          return acc / v;
        }, first),
      };
    default:
      throw new Error(`unsupported operation: ${operation}`);
  }
};
